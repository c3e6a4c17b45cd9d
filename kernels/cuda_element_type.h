// The ATen dtype a CUDA launcher's ElementType names, for the .cpp side of the kernels (only
// included where DITKIT_HAVE_CUDA is set).
#pragma once

#include <c10/core/ScalarType.h>

#include <optional>

#include "kernels/block_pool_cuda.h"  // ElementType

namespace ditkit::cuda {

// nullopt for dtypes the element-wise kernels do not take.
inline std::optional<ElementType> element_type_of(at::ScalarType type) {
  switch (type) {
    case at::kFloat: return ElementType::kF32;
    case at::kHalf: return ElementType::kF16;
    case at::kBFloat16: return ElementType::kBF16;
    default: return std::nullopt;
  }
}

}  // namespace ditkit::cuda
