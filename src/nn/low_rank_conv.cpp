#include "shrink/nn/low_rank_conv.h"

namespace shrink::nn {

namespace {

/// TORCH_CHECKs what every low-rank form needs from its host.
void check_host(const Conv2dOptions& options, ConvFormKind kind) {
  const auto& form = options.form();
  TORCH_CHECK(form.kind == kind, "shrink::nn: a ", conv_form_name(kind), " module cannot hold form ", form.str());
  TORCH_CHECK(form.sizes.size() == conv_form_size_count(kind), "shrink::nn: form ", conv_form_name(kind), " takes ",
              conv_form_size_count(kind), " size(s), got ", form.sizes.size());
  for (auto size : form.sizes)
    TORCH_CHECK(size > 0, "shrink::nn: the ranks of form ", form.str(), " must be positive");
  TORCH_CHECK(options.groups() == 1, "shrink::nn::Conv2d: form ", form.str(), " needs groups == 1, got ",
              options.groups());
}

/// The options along one spatial dimension (0: H, 1: W) of a {kh, 1} or {1, kw} factor; the
/// other dimension gets kernel 1, stride 1, no padding and no dilation.
Conv2dOptions one_dimensional(const Conv2dOptions& host, int64_t in, int64_t out, int64_t dim) {
  const auto& k = *host.kernel_size();
  const auto& s = *host.stride();
  const auto& p = *host.padding();
  const auto& d = *host.dilation();
  if (dim == 0) {
    return Conv2dOptions(in, out, {k[0], 1}).stride({s[0], 1}).padding({p[0], 0}).dilation({d[0], 1});
  }
  return Conv2dOptions(in, out, {1, k[1]}).stride({1, s[1]}).padding({0, p[1]}).dilation({1, d[1]});
}

void print_host(std::ostream& stream, const char* name, const Conv2dOptions& options) {
  stream << "shrink::nn::" << name << "(" << options.in_channels() << ", " << options.out_channels()
         << ", kernel_size=" << options.kernel_size() << ", form=" << options.form().str() << ")";
}

}  // namespace

JaderbergConvImpl::JaderbergConvImpl(const Conv2dOptions& options_) : options(options_) { reset(); }

void JaderbergConvImpl::reset() {
  check_host(options, ConvFormKind::jaderberg);
  vertical = register_module("vertical", Conv2d(one_dimensional(options, options.in_channels(), rank(), 0).bias(false)));
  horizontal = register_module(
      "horizontal", Conv2d(one_dimensional(options, rank(), options.out_channels(), 1).bias(options.bias())));
}

torch::Tensor JaderbergConvImpl::forward(const torch::Tensor& input) {
  return horizontal->forward(vertical->forward(input));
}

void JaderbergConvImpl::pretty_print(std::ostream& stream) const { print_host(stream, "JaderbergConv", options); }

BnLowRankConvImpl::BnLowRankConvImpl(const Conv2dOptions& options_) : options(options_) { reset(); }

void BnLowRankConvImpl::reset() {
  check_host(options, ConvFormKind::bn_low_rank);
  vertical = register_module("vertical", Conv2d(one_dimensional(options, options.in_channels(), rank(), 0).bias(false)));
  bn = register_module("bn", torch::nn::BatchNorm2d(rank()));
  horizontal = register_module(
      "horizontal", Conv2d(one_dimensional(options, rank(), options.out_channels(), 1).bias(options.bias())));
}

torch::Tensor BnLowRankConvImpl::forward(const torch::Tensor& input) {
  auto hidden = vertical->forward(input);
  // BatchNorm2d wants a batch; the host accepts unbatched [C, H, W] input too.
  hidden = hidden.dim() == 3 ? bn->forward(hidden.unsqueeze(0)).squeeze(0) : bn->forward(hidden);
  return horizontal->forward(hidden);
}

void BnLowRankConvImpl::pretty_print(std::ostream& stream) const { print_host(stream, "BnLowRankConv", options); }

CpConvImpl::CpConvImpl(const Conv2dOptions& options_) : options(options_) { reset(); }

void CpConvImpl::reset() {
  check_host(options, ConvFormKind::cp);
  const int64_t r = rank();
  pointwise_in = register_module("pointwise_in", Conv2d(Conv2dOptions(options.in_channels(), r, 1).bias(false)));
  vertical = register_module("vertical", Conv2d(one_dimensional(options, r, r, 0).groups(r).bias(false)));
  horizontal = register_module("horizontal", Conv2d(one_dimensional(options, r, r, 1).groups(r).bias(false)));
  pointwise_out = register_module("pointwise_out",
                                  Conv2d(Conv2dOptions(r, options.out_channels(), 1).bias(options.bias())));
}

torch::Tensor CpConvImpl::forward(const torch::Tensor& input) {
  return pointwise_out->forward(horizontal->forward(vertical->forward(pointwise_in->forward(input))));
}

void CpConvImpl::pretty_print(std::ostream& stream) const { print_host(stream, "CpConv", options); }

Tucker2ConvImpl::Tucker2ConvImpl(const Conv2dOptions& options_) : options(options_) { reset(); }

void Tucker2ConvImpl::reset() {
  check_host(options, ConvFormKind::tucker2);
  first = register_module("first", Conv2d(Conv2dOptions(options.in_channels(), rank_in(), 1).bias(false)));
  core = register_module("core", Conv2d(Conv2dOptions(rank_in(), rank_out(), options.kernel_size())
                                            .stride(options.stride())
                                            .padding(options.padding())
                                            .dilation(options.dilation())
                                            .bias(false)));
  last = register_module("last", Conv2d(Conv2dOptions(rank_out(), options.out_channels(), 1).bias(options.bias())));
}

torch::Tensor Tucker2ConvImpl::forward(const torch::Tensor& input) {
  return last->forward(core->forward(first->forward(input)));
}

void Tucker2ConvImpl::pretty_print(std::ostream& stream) const { print_host(stream, "Tucker2Conv", options); }

std::shared_ptr<torch::nn::Module> make_low_rank_conv(const Conv2dOptions& options) {
  switch (options.form().kind) {
    case ConvFormKind::jaderberg:
      return std::make_shared<JaderbergConvImpl>(options);
    case ConvFormKind::bn_low_rank:
      return std::make_shared<BnLowRankConvImpl>(options);
    case ConvFormKind::cp:
      return std::make_shared<CpConvImpl>(options);
    case ConvFormKind::tucker2:
      return std::make_shared<Tucker2ConvImpl>(options);
    default:
      TORCH_CHECK(false, "make_low_rank_conv: ", options.form().str(), " is not a low-rank form");
  }
}

}  // namespace shrink::nn
