#include "shrink/core/compat.h"

#include <ATen/CPUGeneratorImpl.h>

#include <mutex>

#include "shrink/core/error.h"

namespace shrink::compat {

std::string torch_version() {
  return std::to_string(TORCH_VERSION_MAJOR) + "." + std::to_string(TORCH_VERSION_MINOR) + "." +
         std::to_string(TORCH_VERSION_PATCH);
}

bool cuda_available() { return torch::cuda::is_available(); }

torch::Tensor cpu_rng_state() {
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  return gen.get_state();
}

void set_cpu_rng_state(const torch::Tensor& state) {
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(state);
}

torch::Device parse_device(const std::string& text) {
  if (text == "cpu") return torch::kCPU;
  if (text == "cuda" || text.rfind("cuda:", 0) == 0) {
    if (!cuda_available())
      throw UserError("device '" + text + "' asked for, but this LibTorch (" + torch_version() +
                      ") has no CUDA device available; use device: cpu");
    if (text == "cuda") return torch::Device(torch::kCUDA, 0);
    const std::string index = text.substr(5);
    if (index.empty() || index.find_first_not_of("0123456789") != std::string::npos)
      throw UserError("device '" + text + "': expected cuda:N with N a device index");
    int n = std::stoi(index);
    if (n >= static_cast<int>(torch::cuda::device_count()))
      throw UserError("device '" + text + "': only " + std::to_string(torch::cuda::device_count()) +
                      " CUDA device(s) present");
    return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(n));
  }
  throw UserError("unknown device '" + text + "'; expected cpu, cuda or cuda:N");
}

bool erase_optimizer_state(torch::optim::Optimizer& optimizer, const torch::Tensor& param) {
#if TORCH_VERSION_MAJOR >= 2
  // 2.x keys the state by the TensorImpl pointer.
  return optimizer.state().erase(param.unsafeGetTensorImpl()) > 0;
#else
  return optimizer.state().erase(c10::guts::to_string(param.unsafeGetTensorImpl())) > 0;
#endif
}

torch::Generator make_cpu_generator(uint64_t seed) {
  return at::make_generator<at::CPUGeneratorImpl>(seed);
}

}  // namespace shrink::compat
