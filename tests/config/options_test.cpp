#include <gtest/gtest.h>

#include "config/config_test_util.h"

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "shrink/config/options.h"
#include "shrink/config/recipe_file.h"

namespace shrink {
namespace {

struct PruneOptions {
  double final_sparsity = 0.5;
  int64_t frequency = 100;
  int bits = 8;
  bool per_channel = false;
  std::string granularity = "unstructured";
  std::vector<std::string> targets{"conv1", "fc1"};
  std::vector<double> milestones{};
};

OptionSchema<PruneOptions> schema() {
  OptionSchema<PruneOptions> s;
  s.add("final_sparsity", &PruneOptions::final_sparsity, "Fraction of weights removed.").range(0, 1);
  s.add("frequency", &PruneOptions::frequency, "Steps between mask updates.").min(1);
  s.add("bits", &PruneOptions::bits, "Bit width.");
  s.add("per_channel", &PruneOptions::per_channel, "One range per channel.");
  s.add("granularity", &PruneOptions::granularity, "What is removed.").choices({"unstructured", "channel", "filter"});
  s.add("targets", &PruneOptions::targets, "Layers to prune.");
  s.add("milestones", &PruneOptions::milestones, "Epochs.");
  return s;
}

ConfigNode parse(const std::string& text) { return ConfigNode(read_yaml_string(text, "m.yaml"), "method"); }

using test::error_of;

TEST(FormatValue, Scalars) {
  using detail::format_value;
  EXPECT_EQ(format_value(true), "true");
  EXPECT_EQ(format_value(false), "false");
  EXPECT_EQ(format_value(42), "42");
  EXPECT_EQ(format_value(int64_t{-7}), "-7");
  EXPECT_EQ(format_value(0.1), "0.1");
  EXPECT_EQ(format_value(1e-4), "0.0001");
  EXPECT_EQ(format_value(3.0), "3");
  EXPECT_EQ(format_value(0.0), "0");
  EXPECT_EQ(format_value(1.0 / 3.0), "0.3333333333333333");
  EXPECT_EQ(format_value(std::numeric_limits<double>::infinity()), ".inf");
  EXPECT_EQ(format_value(-std::numeric_limits<double>::infinity()), "-.inf");
}

TEST(FormatValue, StringsAreQuotedOnlyWhenNeeded) {
  using detail::format_value;
  EXPECT_EQ(format_value(std::string("sgd")), "sgd");
  EXPECT_EQ(format_value(std::string("conv1.weight")), "conv1.weight");
  EXPECT_EQ(format_value(std::string("")), "\"\"");
  EXPECT_EQ(format_value(std::string("3")), "\"3\"");
  EXPECT_EQ(format_value(std::string("1e-4")), "\"1e-4\"");
  EXPECT_EQ(format_value(std::string("yes")), "\"yes\"");
  EXPECT_EQ(format_value(std::string("null")), "\"null\"");
  EXPECT_EQ(format_value(std::string("~")), "\"~\"");
  EXPECT_EQ(format_value(std::string("a: b")), "\"a: b\"");
  EXPECT_EQ(format_value(std::string("#x")), "\"#x\"");
  EXPECT_EQ(format_value(std::string(" x")), "\" x\"");
  EXPECT_EQ(format_value(std::string("say \"hi\"")), "\"say \\\"hi\\\"\"");
}

TEST(FormatValue, FormattedValuesReadBack) {
  for (std::string s : {"", "3", "yes", "a: b", "x\"y", "- a", "[1]", "plain", "back\\slash", "line\nbreak"}) {
    auto tree = read_yaml_string("v: " + detail::format_value(s) + "\n", "t");
    EXPECT_EQ(ConfigNode(tree, "")["v"].as<std::string>(), s) << s;
  }
  for (double d : {0.1, 1e-4, 3.0, 1e20, -2.5e-12, 1.0 / 3.0}) {
    auto tree = read_yaml_string("v: " + detail::format_value(d) + "\n", "t");
    EXPECT_EQ(ConfigNode(tree, "")["v"].as<double>(), d) << d;
  }
  auto tree = read_yaml_string("v: " + detail::format_value(std::vector<int64_t>{3, 6}) + "\n", "t");
  EXPECT_EQ(ConfigNode(tree, "")["v"].as<std::vector<int64_t>>(), (std::vector<int64_t>{3, 6}));
}

TEST(OptionSchema, DefaultsWhenAbsentOrNull) {
  auto s = schema();
  PruneOptions a = s.parse(ConfigNode());
  EXPECT_DOUBLE_EQ(a.final_sparsity, 0.5);
  EXPECT_EQ(a.targets, (std::vector<std::string>{"conv1", "fc1"}));
  auto root = ConfigNode(read_yaml_string("method:\n", "m.yaml"), "");
  PruneOptions b = s.parse(root["method"]);
  EXPECT_EQ(b.frequency, 100);
  PruneOptions c = s.parse(parse("bits: 4\n"));
  EXPECT_EQ(c.bits, 4);
  EXPECT_EQ(c.frequency, 100);
  EXPECT_EQ(c.granularity, "unstructured");
}

TEST(OptionSchema, ParsesEveryType) {
  auto o = schema().parse(parse(
      "final_sparsity: 0.9\nfrequency: 50\nbits: 4\nper_channel: true\ngranularity: channel\n"
      "targets: fc2\nmilestones: [1, 2.5]\n"));
  EXPECT_DOUBLE_EQ(o.final_sparsity, 0.9);
  EXPECT_EQ(o.frequency, 50);
  EXPECT_EQ(o.bits, 4);
  EXPECT_TRUE(o.per_channel);
  EXPECT_EQ(o.granularity, "channel");
  EXPECT_EQ(o.targets, (std::vector<std::string>{"fc2"}));
  EXPECT_EQ(o.milestones, (std::vector<double>{1.0, 2.5}));
}

TEST(OptionSchema, RangeErrors) {
  auto s = schema();
  EXPECT_EQ(error_of([&] { s.parse(parse("final_sparsity: 1.5\n")); }),
            "m.yaml:1:17: method.final_sparsity: must be in [0, 1] (got 1.5)");
  EXPECT_EQ(error_of([&] { s.parse(parse("frequency: 0\n")); }),
            "m.yaml:1:12: method.frequency: must be >= 1 (got 0)");
  EXPECT_NO_THROW(s.parse(parse("final_sparsity: 1\n")));
  EXPECT_NO_THROW(s.parse(parse("final_sparsity: 0\n")));
}

TEST(OptionSchema, TypeErrors) {
  auto s = schema();
  EXPECT_EQ(error_of([&] { s.parse(parse("bits: four\n")); }), "m.yaml:1:7: method.bits: expected an integer (got 'four')");
  EXPECT_EQ(error_of([&] { s.parse(parse("per_channel: maybe\n")); }),
            "m.yaml:1:14: method.per_channel: expected true or false (got 'maybe')");
  EXPECT_EQ(error_of([&] { s.parse(parse("final_sparsity: lots\n")); }),
            "m.yaml:1:17: method.final_sparsity: expected a number (got 'lots')");
}

TEST(OptionSchema, ChoicesErrorSuggests) {
  auto s = schema();
  EXPECT_EQ(error_of([&] { s.parse(parse("granularity: chanel\n")); }),
            "m.yaml:1:14: method.granularity: must be one of unstructured, channel, filter (got 'chanel'); "
            "did you mean 'channel'?");
  EXPECT_EQ(error_of([&] { s.parse(parse("granularity: block\n")); }),
            "m.yaml:1:14: method.granularity: must be one of unstructured, channel, filter (got 'block')");
}

TEST(OptionSchema, UnknownKeys) {
  auto s = schema();
  EXPECT_EQ(error_of([&] { s.parse(parse("bits: 4\nfrequncy: 3\n")); }),
            "m.yaml:2:1: method.frequncy: unknown key 'frequncy' (did you mean 'frequency'?)");
  EXPECT_NO_THROW(s.parse(parse("bits: 4\ntype: magnitude\n"), {"type"}));
  EXPECT_EQ(error_of([&] { s.parse(parse("- 1\n")); }), "m.yaml:1:1: method: expected a map of options");
}

TEST(OptionSchema, Docs) {
  auto docs = schema().docs();
  ASSERT_EQ(docs.size(), 7u);
  EXPECT_EQ(schema().names(), (std::vector<std::string>{"final_sparsity", "frequency", "bits", "per_channel",
                                                        "granularity", "targets", "milestones"}));
  EXPECT_EQ(docs[0].name, "final_sparsity");
  EXPECT_EQ(docs[0].type, "float");
  EXPECT_EQ(docs[0].default_value, "0.5");
  EXPECT_EQ(docs[0].help, "Fraction of weights removed. Range [0, 1].");
  EXPECT_EQ(docs[1].type, "int");
  EXPECT_EQ(docs[1].default_value, "100");
  EXPECT_EQ(docs[3].type, "bool");
  EXPECT_EQ(docs[3].default_value, "false");
  EXPECT_EQ(docs[4].type, "string (unstructured|channel|filter)");
  EXPECT_EQ(docs[4].default_value, "unstructured");
  EXPECT_EQ(docs[5].type, "list of string");
  EXPECT_EQ(docs[5].default_value, "[conv1, fc1]");
  EXPECT_EQ(docs[6].type, "list of float");
  EXPECT_EQ(docs[6].default_value, "[]");
}

}  // namespace
}  // namespace shrink
