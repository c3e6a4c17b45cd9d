// A 3x5-pixel bitmap font for labels on images the project draws itself (heat maps), so that
// no font or image library is needed. Upper-case letters, digits and a little punctuation;
// lower case is drawn as upper case, and anything else as a hollow box.
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <cstdint>
#include <string>

namespace ditkit {

// Each glyph is 3x5 pixels in a 4x6 cell (one column and one row of spacing), times `scale`.
constexpr int64_t kGlyphCellWidth = 4, kGlyphCellHeight = 6;

int64_t text_width(const std::string& text, int64_t scale);

// Draws `text` with its top-left corner at (x, y) into image, uint8 [H, W, 3] on the CPU; pixels
// falling outside the image are skipped.
void draw_text(at::Tensor& image, int64_t x, int64_t y, const std::string& text, int64_t scale,
               std::array<uint8_t, 3> colour);

}  // namespace ditkit
