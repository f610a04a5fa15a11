// `shrink export --format compressed` end to end, its errors, and the Deep Compression figures
// of `shrink summary`.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "test_util.h"

using namespace shrink::test;
namespace fs = std::filesystem;

TEST(ExportCli, CompressedExportOfATinyRunAndItsErrors) {
  TempDir tmp;
  write_file(tmp.file("r.yaml"),
             "seed: 1\nthreads: 2\noutput: " + tmp.file("run") +
                 "\ndata: {name: synthetic, channels: 1, height: 28, width: 28, num_classes: 10, train_size: 128, "
                 "test_size: 32}\nmodel: {name: lenet300}\n"
                 "train: {epochs: 1, batch_size: 32, progress: none, optimizer: {name: sgd, lr: 0.01}}\n");
  auto r = run_shrink("train " + tmp.file("r.yaml") + " --quiet");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(read_file(tmp.file("run/model_summary.txt")).find("Deep Compression storage"), std::string::npos);

  const auto out = tmp.file("model.sdc");
  r = run_shrink("export " + tmp.file("run") + " --format compressed --output " + out + " --index-bits-fc 4");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("index bits conv 8, fc 4"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("wrote " + out + ": " + std::to_string(fs::file_size(out)) + " bytes"), std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("dense float32 parameters: 1066440 bytes"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("compression rate"), std::string::npos) << r.output;
  EXPECT_EQ(read_file(out).substr(0, 8), "SHRINKDC");
  std::cout << r.output;

  r = run_shrink("export " + tmp.file("run") + " --format onnx --output " + tmp.file("x"));
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_EQ(r.output, "error: export: unknown --format 'onnx'; formats: compressed, int8\n");
  r = run_shrink("export " + tmp.file("nowhere") + " --format compressed --output " + tmp.file("x"));
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("'" + tmp.file("nowhere") + "' does not exist"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(tmp.file("x")));

  // `shrink summary` shows the Deep Compression bits per layer and the rates.
  r = run_shrink("summary " + tmp.file("run") + " --json");
  ASSERT_EQ(r.status, 0) << r.output;
  auto j = nlohmann::json::parse(r.output);
  EXPECT_EQ(j["layers"][0]["deep_compression"]["index_bits"], 5);
  EXPECT_EQ(j["layers"][0]["deep_compression"]["entries"], 235200);  // dense: every weight stored
  EXPECT_GT(j["total"]["deep_compression_bits"].get<int64_t>(), 266610 * 32);
  EXPECT_GT(j["total"]["huffman_bits"].get<int64_t>(), 0);
  EXPECT_LT(j["comparison"]["deep_compression_rate"].get<double>(), 1.0);
  EXPECT_TRUE(j["comparison"].contains("huffman_rate"));
}
