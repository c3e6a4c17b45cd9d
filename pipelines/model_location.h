// Where "the shipped default model" is, for dit-gen and the library alike, so that both look in
// the same places in the same order:
//   1. $DITKIT_MODEL (a model folder; when set, the only place looked at);
//   2. the installed data folder, <prefix>/share/ditkit/default-model, found relative to the
//      binary that holds this code (libditkit.so or a tool), so an installed tree can be moved;
//   3. the source tree's assets/default-model (running from a build tree).
#pragma once

#include <stdexcept>
#include <string>
#include <vector>

namespace ditkit {

struct ModelNotFound : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The places above, in order, whether they exist or not.
std::vector<std::string> default_model_candidates();

// The first candidate that is a folder; else throws ModelNotFound naming every place it looked.
std::string find_default_model_folder();

}  // namespace ditkit
