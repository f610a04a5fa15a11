#include "shrink/nn/conv_forms.h"

namespace shrink::nn {

std::shared_ptr<torch::nn::Module> make_conv_form(const Conv2dOptions& options) {
  switch (options.form().kind) {
    case ConvFormKind::dense:
      TORCH_CHECK(false, "make_conv_form: a dense Conv2d has no form child");
    case ConvFormKind::jaderberg:
    case ConvFormKind::cp:
    case ConvFormKind::tucker2:
    case ConvFormKind::bn_low_rank:
      return make_low_rank_conv(options);
    case ConvFormKind::depthwise_separable:
    case ConvFormKind::fire:
    case ConvFormKind::crelu:
    case ConvFormKind::mba:
    case ConvFormKind::cyclic:
      return make_compact_conv(options);
  }
  TORCH_CHECK(false, "make_conv_form: unknown form");
}

}  // namespace shrink::nn
