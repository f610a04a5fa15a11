// `shrink export --format int8` end to end: a tiny QAT run exported, then evaluated, summarized
// and benchmarked from the int8 file.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "test_util.h"

using namespace shrink::test;
namespace fs = std::filesystem;

TEST(Int8Cli, ExportEvalSummaryBenchOfATinyQatRun) {
  TempDir tmp;
  write_file(tmp.file("r.yaml"),
             "seed: 1\nthreads: 2\noutput: " + tmp.file("run") +
                 "\ndata: {name: synthetic, channels: 1, height: 12, width: 12, num_classes: 4, train_size: 64, "
                 "test_size: 32}\nmodel: {name: cnn, config: [8, 0, 16, 0]}\n"
                 "train: {epochs: 1, batch_size: 16, progress: none, optimizer: {name: sgd, lr: 0.01}}\n"
                 "compression:\n"
                 "  - method: quantization\n"
                 "    targets: ['*']\n"
                 "    weights: {quantizer: uniform, bits: 8, per_channel: true}\n"
                 "    inputs: {quantizer: uniform, bits: 8, symmetric: false, range: moving_average}\n"
                 "    fold_bn: true\n");
  auto r = run_shrink("train " + tmp.file("r.yaml") + " --quiet");
  ASSERT_EQ(r.status, 0) << r.output;

  const auto out = tmp.file("model.q8");
  r = run_shrink("export " + tmp.file("run") + " --format int8 --output " + out + " --calibration-batches 2");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("wrote " + out + ": " + std::to_string(fs::file_size(out)) + " bytes; 3 layers int8"),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("calibrated on 32 examples"), std::string::npos) << r.output;
  EXPECT_EQ(read_file(out).substr(0, 8), "SHRINKQ8");

  // The int8 model's accuracy is the fake-quantized checkpoint's, up to rounding.
  auto fake = run_shrink("eval " + tmp.file("run") + " --json");
  ASSERT_EQ(fake.status, 0) << fake.output;
  r = run_shrink("eval " + out + " --json");
  ASSERT_EQ(r.status, 0) << r.output;
  auto j = nlohmann::json::parse(r.output), jf = nlohmann::json::parse(fake.output);
  EXPECT_EQ(j["examples"], 32);
  EXPECT_NEAR(j["loss"].get<double>(), jf["loss"].get<double>(), 0.05);

  r = run_shrink("summary " + out);
  ASSERT_EQ(r.status, 0) << r.output;
  r = run_shrink("bench " + out + " --repeats 2 --json");
  ASSERT_EQ(r.status, 0) << r.output;
  j = nlohmann::json::parse(r.output);
  EXPECT_EQ(j["batch_size"], 16);
  EXPECT_GT(j["int8_batch"]["median_ms"].get<double>(), 0);
  r = run_shrink("bench " + out + " --compare-dense");
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("is an int8 model"), std::string::npos) << r.output;
}
