// Registers the model zoo (VGG, AlexNet, SqueezeNet, MobileNet V1/V2); called from
// register_builtin_models (model_registry.cpp).
#include "shrink/dynamic/dcn.h"
#include "shrink/models/alexnet.h"
#include "shrink/models/mlp.h"
#include "shrink/models/mobilenet.h"
#include "shrink/models/model.h"
#include "shrink/models/plain_cnn.h"
#include "shrink/models/squeezenet.h"
#include "shrink/models/vgg.h"

namespace shrink::detail {

void register_zoo_models(Registry<ModelFactory>& registry) {
  add_builtin_model<Vgg11BnCifarImpl>(
      registry, "vgg11_bn_cifar",
      "VGG-11 (config A) with BN for 32x32: 5 max pools, flatten 512 -> Linear(512, classes) "
      "(9,231,114 parameters with 10 classes)");
  add_builtin_model<Vgg16BnCifarImpl>(
      registry, "vgg16_bn_cifar",
      "VGG-16 (config D) with BN for 32x32: 5 max pools, flatten 512 -> Linear(512, classes) "
      "(14,728,266 parameters with 10 classes)");
  add_builtin_model<PlainCnnImpl>(
      registry, "cnn",
      "Plain VGG-style CNN for small inputs: 3x3 conv-BN-ReLU per width, 0 = max pool, then Linear "
      "(default [32, 0, 64, 0, 128, 0]: 104,650 parameters, 7.46M MACs at 1x28x28)");
  add_builtin_model<Vgg16Impl>(registry, "vgg16",
                               "torchvision vgg16 for ImageNet, no BN (138,357,544 parameters, 15.5G MACs at 224)");
  add_builtin_model<AlexNetImpl>(registry, "alexnet",
                                 "torchvision AlexNet for ImageNet (61,100,840 parameters, 714M MACs at 224)");
  add_builtin_model<SqueezeNet11Impl>(
      registry, "squeezenet1_1", "torchvision SqueezeNet 1.1 for ImageNet (1,235,496 parameters, 349M MACs at 224)");
  add_builtin_model<SqueezeNet11CifarImpl>(
      registry, "squeezenet1_1_cifar",
      "SqueezeNet 1.1 with a 3x3 stride-1 stem for 32x32 (three pools: Fire 9-12 at 4x4)");
  add_builtin_model<MobileNetV1ImageNetImpl>(
      registry, "mobilenet_v1",
      "MobileNet V1 (Howard et al. 2017) for ImageNet (4.23M parameters, 569M MACs at 224, width 1.0)");
  add_builtin_model<MobileNetV1CifarImpl>(registry, "mobilenet_v1_cifar",
                                          "MobileNet V1 with a stride-1 stem for 32x32 (ends at 2x2)");
  add_builtin_model<MobileNetV2ImageNetImpl>(
      registry, "mobilenet_v2", "torchvision MobileNet V2 for ImageNet (3,504,872 parameters, 300M MACs at 224)");
  add_builtin_model<MobileNetV2CifarImpl>(
      registry, "mobilenet_v2_cifar",
      "MobileNet V2 with the stem and the 24-channel stage at stride 1 for 32x32 (ends at 4x4)");
  add_builtin_model<MlpImpl>(registry, "mlp",
                             "Multilayer perceptron of Shrink Linear layers fc1, fc2, ... (hidden widths, dropout); "
                             "default [300, 100] = LeNet-300-100");
  add_builtin_model<HashedMlpImpl>(registry, "hashed_mlp",
                                   "HashedNets MLP (Chen et al. 2015): every layer a HashedLinear storing `compression` "
                                   "of its virtual weights");
  registry.add({"dcn",
                "Dynamic Capacity Network (Almahairi et al. 2016): a coarse net on every patch, a fine net on the k most "
                "salient ones (mode: dcn | fine_everywhere | coarse_only)",
                &dynamic::DcnImpl::from_config, dynamic::DcnImpl::schema().docs()});
}

}  // namespace shrink::detail
