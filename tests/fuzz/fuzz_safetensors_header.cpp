// libFuzzer target for the safetensors header parser (tests/fuzz/run.sh builds and runs it).
// Any input must either parse or be rejected with std::runtime_error, the parser's only error
// type; any other exception, a crash or a sanitizer report is a bug. A header that parses must
// also come back unchanged after encode_safetensors_header() and a second parse.
#include <cstdlib>
#include <stdexcept>

#include "dit/safetensors_header.h"

namespace {

bool same_entries(const ditkit::SafetensorsEntry& a, const ditkit::SafetensorsEntry& b) {
  return a.name == b.name && a.dtype == b.dtype && a.shape == b.shape && a.begin == b.begin && a.end == b.end;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ditkit::SafetensorsHeader header;
  try {
    header = ditkit::parse_safetensors_header(data, size, "fuzz-input");
  } catch (const std::runtime_error&) {
    return 0;
  }
  std::string file = ditkit::encode_safetensors_header(header.tensors, header.metadata, "re-encoded");
  file.resize(file.size() + (size - header.data_offset));  // the same data buffer size
  const ditkit::SafetensorsHeader again =
      ditkit::parse_safetensors_header(reinterpret_cast<const uint8_t*>(file.data()), file.size(), "re-encoded");
  if (again.metadata != header.metadata || again.tensors.size() != header.tensors.size()) std::abort();
  for (size_t i = 0; i < header.tensors.size(); ++i)
    if (!same_entries(again.tensors[i], header.tensors[i])) std::abort();
  return 0;
}
