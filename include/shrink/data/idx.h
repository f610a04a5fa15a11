#pragma once
// Reader for the IDX format of MNIST and Fashion-MNIST (http://yann.lecun.com/exdb/mnist/):
// a 4-byte magic (0x00 0x00 TYPE NDIMS), NDIMS big-endian int32 sizes, then the data in
// row-major order. Files may be raw or gzip-compressed (detected by the gzip magic 1f 8b,
// not by the file name). Only unsigned-byte data (TYPE 0x08) is supported.
#include <torch/torch.h>

#include <string>

namespace shrink {

/// Reads an IDX file into a uint8 tensor with the file's dimensions.
/// Throws UserError naming the file when it is missing, not IDX, of another data type, or
/// shorter than its header says.
torch::Tensor read_idx(const std::string& path);

/// `dir/stem` when it exists, else `dir/stem.gz` when that exists; throws UserError naming
/// both otherwise.
std::string resolve_idx(const std::string& dir, const std::string& stem);

}  // namespace shrink
