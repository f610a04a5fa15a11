// examples/custom_method built the way a user would: install Shrink into a prefix, build the
// example project against it with find_package(Shrink), then use the method compiled into an
// executable and loaded as a plug-in by the installed CLI.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <regex>
#include <string>

#include "test_util.h"

namespace fs = std::filesystem;
using shrink::test::CommandResult;
using shrink::test::run_command;
using shrink::test::TempDir;

namespace {

std::string quote(const std::string& s) { return "'" + s + "'"; }

/// The first "final top-1: X%" of an output, or -1.
double final_top1(const std::string& output) {
  std::smatch m;
  static const std::regex re(R"(final top-1: ([0-9.]+)%)");
  return std::regex_search(output, m, re) ? std::stod(m[1]) : -1.0;
}

/// Runs `command` from the source root (the recipe's data.root is relative to it).
CommandResult run_in_source(const std::string& command) {
  return run_command("cd " + quote(SHRINK_SOURCE_DIR) + " && " + command);
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

TEST(CustomMethod, InstallBuildExampleTrainAndPlugin) {
  if (!fs::exists(shrink::test::fashion_mnist_dir() + "/train-images-idx3-ubyte") &&
      !fs::exists(shrink::test::fashion_mnist_dir() + "/train-images-idx3-ubyte.gz"))
    GTEST_SKIP() << "Fashion-MNIST not found in " << shrink::test::fashion_mnist_dir();

  TempDir tmp;
  const std::string prefix = tmp.file("prefix"), build = tmp.file("build");
  const std::string recipe = std::string(SHRINK_SOURCE_DIR) + "/examples/custom_method/recipe.yaml";
  auto start = std::chrono::steady_clock::now();

  // 1. Install Shrink into a fresh prefix.
  auto install = run_command("cmake --install " + quote(SHRINK_BINARY_DIR) + " --prefix " + quote(prefix));
  ASSERT_EQ(install.status, 0) << install.output;
  const std::string installed_cli = prefix + "/bin/shrink";
  ASSERT_TRUE(fs::exists(installed_cli));
  ASSERT_TRUE(fs::exists(prefix + "/include/shrink/compression/method.h"));
  ASSERT_TRUE(fs::exists(prefix + "/share/shrink/configs/models/lenet300.yaml"));
  std::cout << "[ timing ] install " << seconds_since(start) << " s\n";

  // 2. Build the example as a user's project against the prefix.
  auto configure = run_command("cmake -S " + quote(std::string(SHRINK_SOURCE_DIR) + "/examples/custom_method") +
                               " -B " + quote(build) + " -G Ninja -DCMAKE_PREFIX_PATH=" + quote(prefix) +
                               " -DCMAKE_BUILD_TYPE=Release");
  ASSERT_EQ(configure.status, 0) << configure.output;
  auto compile = run_command("cmake --build " + quote(build) + " -j2");
  ASSERT_EQ(compile.status, 0) << compile.output;
  const std::string plugin = build + "/libfreeze_layers.so", exe = build + "/train_with_freeze";
  ASSERT_TRUE(fs::exists(plugin));
  ASSERT_TRUE(fs::exists(exe));
  // The example uses the installed library, not the build tree's.
  auto ldd = run_command("ldd " + quote(exe));
  EXPECT_NE(ldd.output.find(prefix + "/lib"), std::string::npos) << ldd.output;
  std::cout << "[ timing ] example built " << seconds_since(start) << " s\n";

  // 3. The executable with the method compiled in: fc1 frozen for half an epoch, then trained.
  auto half = run_in_source(quote(exe) + " " + quote(recipe) + " --quiet --set output=" + quote(tmp.file("half")));
  ASSERT_EQ(half.status, 0) << half.output;
  EXPECT_GT(final_top1(half.output), 50.0) << half.output;
  EXPECT_NE(half.output.find("fc1.weight changed: yes"), std::string::npos) << half.output;
  EXPECT_TRUE(fs::exists(tmp.file("half") + "/last.pt"));

  // Frozen for the whole run: fc1 keeps its initial values exactly (SGD with momentum and
  // weight decay would move it otherwise), while the other layers learn.
  auto whole = run_in_source(quote(exe) + " " + quote(recipe) + " --quiet --set output=" + quote(tmp.file("whole")) +
                             " --set compression[0].epochs=1.0");
  ASSERT_EQ(whole.status, 0) << whole.output;
  EXPECT_NE(whole.output.find("fc1.weight changed: no"), std::string::npos) << whole.output;
  EXPECT_NE(whole.output.find("fc1.bias changed: no"), std::string::npos) << whole.output;
  EXPECT_NE(whole.output.find("fc2.weight changed: yes"), std::string::npos) << whole.output;
  EXPECT_NE(whole.output.find("fc3.weight changed: yes"), std::string::npos) << whole.output;
  EXPECT_GT(final_top1(whole.output), 30.0) << whole.output;
  std::cout << "[ timing ] example trained " << seconds_since(start) << " s\n";

  // 4. The installed CLI with the plug-in (both use <prefix>/lib/libshrink.so: one registry).
  auto listed = run_command(quote(installed_cli) + " --plugin " + quote(plugin) + " list method freeze_layers");
  ASSERT_EQ(listed.status, 0) << listed.output;
  EXPECT_NE(listed.output.find("freeze_layers"), std::string::npos) << listed.output;
  EXPECT_NE(listed.output.find("epochs"), std::string::npos) << listed.output;
  EXPECT_NE(listed.output.find("float"), std::string::npos) << listed.output;

  // --plugin after the subcommand, as users write it (it must not swallow the recipe path).
  auto trained = run_in_source(quote(installed_cli) + " train --plugin " + quote(plugin) + " " + quote(recipe) +
                               " --quiet --set output=" + quote(tmp.file("cli")));
  ASSERT_EQ(trained.status, 0) << trained.output;
  EXPECT_TRUE(fs::exists(tmp.file("cli") + "/last.pt"));
  EXPECT_NE(shrink::test::read_file(tmp.file("cli") + "/log.txt").find("freeze_layers"), std::string::npos);

  // Without the plug-in the method is unknown: exit 2, naming the registered methods.
  auto missing = run_in_source(quote(installed_cli) + " train " + quote(recipe) + " --quiet --set output=" +
                               quote(tmp.file("missing")));
  EXPECT_EQ(missing.status, 2) << missing.output;
  EXPECT_NE(missing.output.find("unknown compression method 'freeze_layers'"), std::string::npos) << missing.output;
  EXPECT_NE(missing.output.find("registered: "), std::string::npos) << missing.output;
  EXPECT_NE(missing.output.find("l1_regularization"), std::string::npos) << missing.output;
  EXPECT_FALSE(fs::exists(tmp.file("missing")));
  std::cout << "[ timing ] total " << seconds_since(start) << " s\n";
}
