#include "shrink/models/plain_cnn.h"

#include "shrink/core/error.h"

namespace shrink {
namespace {
const VggConfig& checked(const PlainCnnImpl::Options& o) {
  bool conv = false;
  for (int64_t v : o.config) {
    if (v < 0) throw UserError("cnn: config entries are conv widths or 0 (max pool), got " + std::to_string(v));
    conv = conv || v > 0;
  }
  if (!conv) throw UserError("cnn: config needs at least one conv width");
  return o.config;
}
}  // namespace

OptionSchema<PlainCnnImpl::Options> PlainCnnImpl::schema() {
  OptionSchema<Options> s;
  s.add("num_classes", &Options::num_classes, "Number of outputs (0 = the dataset's class count).").min(0);
  s.add("config", &Options::config, "Conv widths (3x3, BN, ReLU) in order, 0 for a 2x2 max pool.");
  return s;
}

PlainCnnImpl::PlainCnnImpl(Options options_, const DataInfo& data)
    : VggCifarImpl(VggCifarImpl::Options{options_.num_classes}, data, checked(options_), "cnn"),
      cnn_options(std::move(options_)) {}

}  // namespace shrink
