#pragma once
// Checks every model constructor makes on its DataInfo, with the same messages for all models.
#include <string>
#include <vector>

#include "shrink/models/model.h"

namespace shrink {

/// `from_options` when positive, else the data's class count; UserError naming `model` when
/// neither says.
int64_t model_num_classes(const std::string& model, int64_t from_options, const DataInfo& data);

/// The channel count of image data [C, H, W]; UserError naming `model` for any other shape.
int64_t image_channels(const std::string& model, const DataInfo& data);

/// "3x32x32", or "(empty)".
std::string shape_text(const std::vector<int64_t>& shape);

}  // namespace shrink
