// Data and zoo through the `shrink` program: `data convert` to CIFAR binaries and to an image
// folder, training and evaluating on what it wrote (transforms, workers, class list), the
// loader benchmark, and `shrink summary` against the published parameter and MAC counts.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "test_util.h"

using namespace shrink::test;
namespace fs = std::filesystem;

namespace {

/// Fashion-MNIST subsets as a data config, for `shrink data convert`.
std::string fmnist_config(int train, int test) {
  return "data: {name: fashion_mnist, root: " + fashion_mnist_dir() + ", train_subset: " + std::to_string(train) +
         ", test_subset: " + std::to_string(test) + "}\n";
}

nlohmann::json summary_json(const TempDir& tmp, const std::string& model, int size, int classes) {
  const std::string recipe = tmp.file(model + ".yaml");
  write_file(recipe, "data: {name: synthetic, height: " + std::to_string(size) + ", width: " + std::to_string(size) +
                         ", num_classes: " + std::to_string(classes) + ", train_size: 2, test_size: 2}\nmodel: {name: " +
                         model + "}\n");
  auto r = run_shrink("summary " + recipe + " --json");
  EXPECT_EQ(r.status, 0) << r.output;
  return nlohmann::json::parse(r.output)["total"];
}

}  // namespace

TEST(DataCli, ConvertToCifarThenTrainResNet20WithAugmentation) {
  TempDir tmp;
  write_file(tmp.file("fm.yaml"), fmnist_config(256, 100));
  auto r = run_shrink("data convert " + tmp.file("fm.yaml") + " --format cifar10 --output " + tmp.file("cifar"));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("wrote 256 training and 100 test examples (10 classes)"), std::string::npos) << r.output;
  EXPECT_EQ(fs::file_size(tmp.file("cifar/test_batch.bin")), 100u * 3073u);

  // A second conversion into the same folder is refused, and nothing there changes.
  r = run_shrink("data convert " + tmp.file("fm.yaml") + " --format cifar10 --output " + tmp.file("cifar"));
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find(tmp.file("cifar")), std::string::npos) << r.output;

  write_file(tmp.file("r.yaml"),
             "seed: 3\nthreads: 2\noutput: " + tmp.file("run") +
                 "\ndata:\n  name: cifar10\n  root: " + tmp.file("cifar") +
                 "\n  mean: [0.219]\n  std: [0.332]\n  workers: 2\n  transforms:\n    train:\n"
                 "      - random_crop: {size: 32, padding: 4}\n      - horizontal_flip\n      - cutout: {size: 8}\n"
                 "model: {name: resnet20}\ntrain:\n  epochs: 1\n  batch_size: 64\n  progress: none\n"
                 "  optimizer: {name: sgd, lr: 0.05, momentum: 0.9}\n");
  r = run_shrink("train " + tmp.file("r.yaml") + " --quiet");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(read_file(tmp.file("run/classes.txt")).rfind("T-shirt/top\nTrouser\n", 0), 0u);
  auto log = read_file(tmp.file("run/log.txt"));
  EXPECT_NE(log.find("random_crop(size=32, padding=4) -> horizontal_flip(p=0.5) -> cutout("), std::string::npos)
      << log;
  r = run_shrink("eval " + tmp.file("run") + " --json");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(nlohmann::json::parse(r.output)["examples"].get<int64_t>(), 100);

  // A truncated CIFAR file is a named error before anything is trained.
  fs::resize_file(tmp.file("cifar/data_batch_3.bin"), 3073 * 10 + 7);
  r = run_shrink("train " + tmp.file("r.yaml") + " --quiet --set output=" + tmp.file("run2"));
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("data_batch_3.bin"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(tmp.file("run2")));
}

TEST(DataCli, ConvertToImageFolderThenTrainAndBenchTheLoader) {
  TempDir tmp;
  write_file(tmp.file("fm.yaml"), fmnist_config(200, 50));
  auto r = run_shrink("data convert " + tmp.file("fm.yaml") + " --format image_folder --image-format png --output " +
                      tmp.file("folder"));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(fs::is_directory(tmp.file("folder/train/0_T-shirt_top")));
  EXPECT_TRUE(fs::is_directory(tmp.file("folder/val/9_Ankle_boot")));

  write_file(tmp.file("r.yaml"),
             "seed: 3\nthreads: 2\noutput: " + tmp.file("run") + "\ndata:\n  name: image_folder\n  root: " +
                 tmp.file("folder") +
                 "\n  channels: 1\n  mean: [0.286]\n  std: [0.353]\n  workers: 1\n  transforms:\n    train:\n"
                 "      - random_resized_crop: {size: 28, scale: [0.5, 1.0]}\n"
                 "model: {name: lenet5}\ntrain: {epochs: 1, batch_size: 50, progress: none}\n");
  r = run_shrink("train " + tmp.file("r.yaml") + " --quiet");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(read_file(tmp.file("run/classes.txt")).rfind("0_T-shirt_top\n1_Trouser\n", 0), 0u);

  r = run_shrink("bench " + tmp.file("r.yaml") + " --loader-only --workers 1,2 --loader-batches 6 --json");
  ASSERT_EQ(r.status, 0) << r.output;
  auto j = nlohmann::json::parse(r.output);
  ASSERT_EQ(j.size(), 2u);
  EXPECT_EQ(j[1]["workers"], 2);
  EXPECT_GT(j[0]["images_per_sec"].get<double>(), 0);

  // An unreadable image is an error naming it; skip_corrupt counts it instead.
  write_file(tmp.file("folder/train/3_Dress/broken.png"), "not an image");
  r = run_shrink("train " + tmp.file("r.yaml") + " --quiet --set output=" + tmp.file("run2"));
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("broken.png"), std::string::npos) << r.output;
  r = run_shrink("train " + tmp.file("r.yaml") + " --set data.skip_corrupt=true --set output=" + tmp.file("run3"));
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_NE(read_file(tmp.file("run3/log.txt")).find("1 unreadable images skipped"), std::string::npos);
}

TEST(DataCli, ListShowsTransformsAndDataKeys) {
  auto r = run_shrink("list transform random_crop");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("padding"), std::string::npos) << r.output;
  r = run_shrink("list dataset cifar10");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("validation_fraction"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("root"), std::string::npos) << r.output;
}

TEST(DataCli, SummaryAgreesWithPublishedCounts) {
  TempDir tmp;
  // He et al. 2016: ResNet-20 0.27M parameters, 40.8M MACs (shortcut B; A has no projection).
  auto t = summary_json(tmp, "resnet20", 32, 10);
  EXPECT_EQ(t["parameters"].get<int64_t>(), 269722);
  EXPECT_NEAR(t["macs"].get<double>(), 40.8e6, 0.01 * 40.8e6);
  t = summary_json(tmp, "resnet56", 32, 10);
  EXPECT_NEAR(t["parameters"].get<double>(), 0.85e6, 0.005e6);
  EXPECT_NEAR(t["macs"].get<double>(), 125.7e6, 0.005 * 125.7e6);
  t = summary_json(tmp, "resnet18", 224, 1000);
  EXPECT_EQ(t["parameters"].get<int64_t>(), 11689512);
  EXPECT_NEAR(t["macs"].get<double>(), 1.82e9, 0.005 * 1.82e9);
  t = summary_json(tmp, "resnet50", 224, 1000);
  EXPECT_EQ(t["parameters"].get<int64_t>(), 25557032);
  EXPECT_NEAR(t["macs"].get<double>(), 4.1e9, 0.01 * 4.1e9);
  t = summary_json(tmp, "mobilenet_v1", 224, 1000);
  EXPECT_NEAR(t["parameters"].get<double>(), 4.23e6, 0.005e6);
  EXPECT_NEAR(t["macs"].get<double>(), 569e6, 0.005 * 569e6);
  t = summary_json(tmp, "vgg16", 224, 1000);
  EXPECT_EQ(t["parameters"].get<int64_t>(), 138357544);
}
