#include <gtest/gtest.h>

#include "config/config_test_util.h"

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "shrink/config/node.h"
#include "shrink/config/recipe_file.h"

namespace shrink {
namespace {

ConfigNode parse(const std::string& text) { return ConfigNode(read_yaml_string(text, "r.yaml"), ""); }

using test::error_of;

TEST(ConfigValue, MapHelpers) {
  auto m = ConfigValue::make_map({"f", 1, 1});
  EXPECT_EQ(m->kind, ConfigValue::Kind::Map);
  m->set("a", ConfigValue::make_scalar("1"));
  m->set("b", ConfigValue::make_scalar("2"));
  m->set("a", ConfigValue::make_scalar("3"));  // replaced in place
  ASSERT_EQ(m->entries.size(), 2u);
  EXPECT_EQ(m->entries[0].first, "a");
  EXPECT_EQ(m->entries[0].second->scalar, "3");
  EXPECT_EQ(m->find("b")->scalar, "2");
  EXPECT_EQ(m->find("c"), nullptr);
  EXPECT_TRUE(m->erase("a"));
  EXPECT_FALSE(m->erase("a"));
  ASSERT_EQ(m->entries.size(), 1u);
  EXPECT_EQ(m->entries[0].first, "b");
}

TEST(ConfigValue, DeepCopyIsIndependent) {
  auto root = read_yaml_string("a:\n  b: [1, \"2\"]\n", "f.yaml");
  auto copy = root->deep_copy();
  copy->find("a")->find("b")->items[0]->scalar = "9";
  EXPECT_EQ(root->find("a")->find("b")->items[0]->scalar, "1");
  EXPECT_TRUE(copy->find("a")->find("b")->items[1]->quoted);
  EXPECT_EQ(copy->find("a")->location.str(), "f.yaml:2:3");
}

TEST(ConfigNode, PathsOfChildrenAndItems) {
  auto root = parse("train:\n  epochs: 3\ncompression:\n  - a: 1\n  - b: 2\n");
  EXPECT_EQ(root.path(), "");
  EXPECT_EQ(root["train"].path(), "train");
  EXPECT_EQ(root["train"]["epochs"].path(), "train.epochs");
  EXPECT_EQ(root["compression"].at(1).path(), "compression[1]");
  EXPECT_EQ(root["compression"].at(1)["b"].path(), "compression[1].b");
}

TEST(ConfigNode, LocationsAreOneBased) {
  auto root = parse("train:\n  epochs: 3\n  lr: 0.1\n");
  EXPECT_EQ(root["train"]["epochs"].location().str(), "r.yaml:2:11");
  EXPECT_EQ(root["train"]["lr"].location().str(), "r.yaml:3:7");
}

TEST(ConfigNode, KindsAndAccess) {
  auto root = parse("m: {a: 1, b: 2}\ns: [1, 2, 3]\nx: hi\nn:\n");
  EXPECT_TRUE(root.is_map());
  EXPECT_TRUE(root["m"].is_map());
  EXPECT_TRUE(root["s"].is_sequence());
  EXPECT_TRUE(root["x"].is_scalar());
  EXPECT_TRUE(root["n"].is_null());
  EXPECT_EQ(root["m"].keys(), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(root["s"].size(), 3u);
  EXPECT_EQ(root["x"].text(), "hi");
  EXPECT_TRUE(root.has("m"));
  EXPECT_FALSE(root.has("zzz"));
  EXPECT_FALSE(root.get("zzz").valid());
  EXPECT_TRUE(root.get("m").valid());
  EXPECT_EQ(root.get("m").path(), "m");
  EXPECT_EQ(root.get_or<int>("zzz", 7), 7);
  EXPECT_EQ(root["m"].get_or<int>("a", 7), 1);
  // A null map reads as an empty one.
  EXPECT_FALSE(root["n"].has("a"));
  EXPECT_TRUE(root["n"].keys().empty());
}

TEST(ConfigNode, MissingRequiredKeyFailsAtTheParentMap) {
  auto root = parse("train:\n  epochs: 3\n");
  EXPECT_EQ(error_of([&] { root["train"]["lr"]; }), "r.yaml:2:3: train.lr: missing required key 'lr'");
  EXPECT_EQ(error_of([&] { root["model"]; }), "r.yaml:1:1: model: missing required key 'model'");
}

TEST(ConfigNode, IndexOutOfRange) {
  auto root = parse("s: [1, 2]\n");
  EXPECT_EQ(error_of([&] { root["s"].at(5); }), "r.yaml:1:4: s: index 5 out of range (list has 2 items)");
}

TEST(ConfigNode, FailUsesLocationAndPath) {
  auto root = parse("train:\n  epochs: 3\n");
  EXPECT_EQ(error_of([&] { root["train"]["epochs"].fail("must be positive"); }),
            "r.yaml:2:11: train.epochs: must be positive");
}

TEST(ConfigNode, AccessOnTheWrongKind) {
  auto root = parse("s: [1, 2]\nm: {a: 1}\nx: 3\n");
  EXPECT_EQ(error_of([&] { root["s"]["a"]; }), "r.yaml:1:4: s: expected a map (got a list)");
  EXPECT_EQ(error_of([&] { root["m"].size(); }), "r.yaml:2:4: m: expected a list (got a map)");
  EXPECT_EQ(error_of([&] { root["m"].text(); }), "r.yaml:2:4: m: expected a scalar (got a map)");
  // A scalar is a one-element list.
  EXPECT_EQ(root["x"].size(), 1u);
  EXPECT_EQ(root["x"].at(0).as<int>(), 3);
}

TEST(ConfigNode, CheckKeysSuggestsTheNearestName) {
  auto root = parse("train:\n  epochs: 3\n  epocs: 4\n");
  EXPECT_NO_THROW(root["train"].check_keys({"epochs", "epocs"}));
  EXPECT_EQ(error_of([&] { root["train"].check_keys({"epochs", "lr"}); }),
            "r.yaml:3:3: train.epocs: unknown key 'epocs' (did you mean 'epochs'?)");
}

TEST(ConfigNode, CheckKeysListsValidKeysWithoutASuggestion) {
  auto root = parse("a: 1\nx:\n");
  EXPECT_EQ(error_of([&] { root.check_keys({"a", "b", "c"}); }), "r.yaml:2:1: x: unknown key 'x'; valid keys: a, b, c");
}

TEST(ConfigNode, CheckKeysOfNullIsFine) {
  auto root = parse("opts:\n");
  EXPECT_NO_THROW(root["opts"].check_keys({"a"}));
}

TEST(ConfigNode, Integers) {
  auto root = parse("a: 3\nb: -12\nc: 9000000000\nd: abc\ne: 3.5\nf: \"3\"\ng: 99999999999999999999\n");
  EXPECT_EQ(root["a"].as<int>(), 3);
  EXPECT_EQ(root["b"].as<int>(), -12);
  EXPECT_EQ(root["c"].as<int64_t>(), 9000000000LL);
  EXPECT_EQ(error_of([&] { root["c"].as<int>(); }), "r.yaml:3:4: c: integer out of range (got '9000000000')");
  EXPECT_EQ(error_of([&] { root["d"].as<int>(); }), "r.yaml:4:4: d: expected an integer (got 'abc')");
  EXPECT_EQ(error_of([&] { root["e"].as<int>(); }), "r.yaml:5:4: e: expected an integer (got '3.5')");
  EXPECT_EQ(error_of([&] { root["f"].as<int>(); }), "r.yaml:6:4: f: expected an integer (got the string \"3\")");
  EXPECT_EQ(error_of([&] { root["g"].as<int64_t>(); }),
            "r.yaml:7:4: g: integer out of range (got '99999999999999999999')");
}

TEST(ConfigNode, Numbers) {
  auto root = parse("a: 0.5\nb: 3\nc: 1e-4\nd: x\ne: .inf\nf: -.inf\ng: \"0.5\"\nh: .nan\n");
  EXPECT_DOUBLE_EQ(root["a"].as<double>(), 0.5);
  EXPECT_DOUBLE_EQ(root["b"].as<double>(), 3.0);
  EXPECT_DOUBLE_EQ(root["c"].as<double>(), 1e-4);
  EXPECT_EQ(error_of([&] { root["d"].as<double>(); }), "r.yaml:4:4: d: expected a number (got 'x')");
  EXPECT_TRUE(std::isinf(root["e"].as<double>()));
  EXPECT_LT(root["f"].as<double>(), 0);
  EXPECT_EQ(error_of([&] { root["g"].as<double>(); }), "r.yaml:7:4: g: expected a number (got the string \"0.5\")");
  EXPECT_TRUE(std::isnan(root["h"].as<double>()));
}

TEST(ConfigNode, Booleans) {
  auto root = parse("a: true\nb: False\nc: yes\nd: NO\ne: on\nf: off\ng: yes please\nh: \"true\"\n");
  EXPECT_TRUE(root["a"].as<bool>());
  EXPECT_FALSE(root["b"].as<bool>());
  EXPECT_TRUE(root["c"].as<bool>());
  EXPECT_FALSE(root["d"].as<bool>());
  EXPECT_TRUE(root["e"].as<bool>());
  EXPECT_FALSE(root["f"].as<bool>());
  EXPECT_EQ(error_of([&] { root["g"].as<bool>(); }), "r.yaml:7:4: g: expected true or false (got 'yes please')");
  EXPECT_EQ(error_of([&] { root["h"].as<bool>(); }),
            "r.yaml:8:4: h: expected true or false (got the string \"true\")");
}

TEST(ConfigNode, Strings) {
  auto root = parse("a: hello\nb: \"3\"\nc: 3\nd: {x: 1}\ne:\nf: ~\ng: [1]\n");
  EXPECT_EQ(root["a"].as<std::string>(), "hello");
  EXPECT_EQ(root["b"].as<std::string>(), "3");
  EXPECT_EQ(root["c"].as<std::string>(), "3");
  EXPECT_EQ(error_of([&] { root["d"].as<std::string>(); }), "r.yaml:4:4: d: expected a string (got a map)");
  EXPECT_EQ(error_of([&] { root["e"].as<std::string>(); }), "r.yaml:5:1: e: expected a string (got null)");
  EXPECT_EQ(error_of([&] { root["f"].as<std::string>(); }), "r.yaml:6:1: f: expected a string (got null)");
  EXPECT_EQ(error_of([&] { root["g"].as<std::string>(); }), "r.yaml:7:4: g: expected a string (got a list)");
}

TEST(ConfigNode, Lists) {
  auto root = parse("a: [1, 2, 3]\nb: 4\nc: {x: 1}\nd: [0.5, 1]\ne: [x, \"y\"]\nf: [1, oops]\ng:\n");
  EXPECT_EQ(root["a"].as<std::vector<int>>(), (std::vector<int>{1, 2, 3}));
  EXPECT_EQ(root["a"].as<std::vector<int64_t>>(), (std::vector<int64_t>{1, 2, 3}));
  EXPECT_EQ(root["b"].as<std::vector<int>>(), (std::vector<int>{4}));
  EXPECT_EQ(error_of([&] { root["c"].as<std::vector<int>>(); }), "r.yaml:3:4: c: expected a list (got a map)");
  EXPECT_EQ(root["d"].as<std::vector<double>>(), (std::vector<double>{0.5, 1.0}));
  EXPECT_EQ(root["e"].as<std::vector<std::string>>(), (std::vector<std::string>{"x", "y"}));
  EXPECT_EQ(error_of([&] { root["f"].as<std::vector<int>>(); }), "r.yaml:6:8: f[1]: expected an integer (got 'oops')");
  EXPECT_TRUE(root["g"].as<std::vector<int>>().empty());
}

}  // namespace
}  // namespace shrink
