#include <gtest/gtest.h>

#include "config/config_test_util.h"

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "shrink/config/recipe_file.h"
#include "test_util.h"

namespace shrink {
namespace {

using test::TempDir;
using test::write_file;
namespace fs = std::filesystem;

using test::error_of;

/// Sets an environment variable for the life of the object.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::string& value) : name_(name) {
    if (const char* old = std::getenv(name)) {
      had_ = true;
      old_ = old;
    }
    setenv(name, value.c_str(), 1);
  }
  ~ScopedEnv() {
    if (had_)
      setenv(name_, old_.c_str(), 1);
    else
      unsetenv(name_);
  }

 private:
  const char* name_;
  bool had_ = false;
  std::string old_;
};

/// Same kinds, scalars, quoted flags and keys.
void expect_same_tree(const ConfigValuePtr& a, const ConfigValuePtr& b, const std::string& path = "") {
  ASSERT_TRUE(a && b) << path;
  ASSERT_EQ(a->kind, b->kind) << path;
  EXPECT_EQ(a->scalar, b->scalar) << path;
  EXPECT_EQ(a->quoted, b->quoted) << path;
  ASSERT_EQ(a->items.size(), b->items.size()) << path;
  for (size_t i = 0; i < a->items.size(); ++i)
    expect_same_tree(a->items[i], b->items[i], path + "[" + std::to_string(i) + "]");
  ASSERT_EQ(a->entries.size(), b->entries.size()) << path;
  for (size_t i = 0; i < a->entries.size(); ++i) {
    EXPECT_EQ(a->entries[i].first, b->entries[i].first) << path;
    expect_same_tree(a->entries[i].second, b->entries[i].second, path + "." + a->entries[i].first);
  }
}

// ---------------------------------------------------------------------------------------------
// Reading

TEST(ReadYaml, ScalarsSequencesMapsWithLocations) {
  auto root = read_yaml_string(
      "model: lenet5\n"
      "train:\n"
      "  epochs: 3\n"
      "  name: \"007\"\n"
      "  milestones: [3, 6]\n"
      "compression:\n"
      "  - type: magnitude\n"
      "    targets:\n"
      "      - conv1\n",
      "r.yaml");
  ASSERT_EQ(root->kind, ConfigValue::Kind::Map);
  EXPECT_EQ(root->location.str(), "r.yaml:1:1");
  ConfigNode n(root, "");
  EXPECT_EQ(n.keys(), (std::vector<std::string>{"model", "train", "compression"}));
  EXPECT_EQ(n["model"].location().str(), "r.yaml:1:8");
  EXPECT_EQ(n["train"].location().str(), "r.yaml:3:3");
  EXPECT_EQ(n["train"]["epochs"].location().str(), "r.yaml:3:11");
  EXPECT_FALSE(n["train"]["epochs"].value()->quoted);
  EXPECT_TRUE(n["train"]["name"].value()->quoted);
  EXPECT_EQ(n["train"]["name"].as<std::string>(), "007");
  EXPECT_EQ(n["train"]["milestones"].at(1).location().str(), "r.yaml:5:19");
  EXPECT_EQ(n["compression"].at(0).location().str(), "r.yaml:7:5");
  EXPECT_EQ(n["compression"].at(0)["targets"].at(0).location().str(), "r.yaml:9:9");
  EXPECT_EQ(n["compression"].at(0)["targets"].at(0).path(), "compression[0].targets[0]");
}

TEST(ReadYaml, NullsAndBlockScalars) {
  auto root = read_yaml_string("a:\nb: ~\nc: null\nd: |\n  two\n  lines\n", "r.yaml");
  ConfigNode n(root, "");
  EXPECT_TRUE(n["a"].is_null());
  EXPECT_TRUE(n["b"].is_null());
  EXPECT_TRUE(n["c"].is_null());
  EXPECT_EQ(n["a"].location().str(), "r.yaml:1:1");
  EXPECT_EQ(n["d"].as<std::string>(), "two\nlines\n");
  EXPECT_TRUE(n["d"].value()->quoted);
}

TEST(ReadYaml, AnchorsAndAliases) {
  auto root = read_yaml_string("x: &opt {lr: 0.1}\ny: *opt\n", "r.yaml");
  ConfigNode n(root, "");
  EXPECT_DOUBLE_EQ(n["y"]["lr"].as<double>(), 0.1);
  EXPECT_NE(n["x"].value(), n["y"].value());  // a copy, not shared
}

TEST(ReadYaml, EmptyTextIsAnEmptyMap) {
  auto root = read_yaml_string("", "r.yaml");
  EXPECT_EQ(root->kind, ConfigValue::Kind::Map);
  EXPECT_TRUE(root->entries.empty());
  root = read_yaml_string("# only a comment\n", "r.yaml");
  EXPECT_EQ(root->kind, ConfigValue::Kind::Map);
}

TEST(ReadYaml, SyntaxErrorHasFileLineColumn) {
  auto what = error_of([] { read_yaml_string("a: 1\n  b: 2\n", "r.yaml"); });
  EXPECT_EQ(what, "r.yaml:2:4: YAML syntax error: illegal map value");
  what = error_of([] { read_yaml_string("a: [1, 2\nb: 3\n", "r.yaml"); });
  EXPECT_EQ(what.rfind("r.yaml:2:", 0), 0u) << what;
  EXPECT_NE(what.find("YAML syntax error: "), std::string::npos) << what;
}

TEST(ReadYaml, DuplicateKeyFailsAtTheSecondOne) {
  EXPECT_EQ(error_of([] { read_yaml_string("train:\n  lr: 1\n  epochs: 2\n  lr: 3\n", "r.yaml"); }),
            "r.yaml:4:3: train.lr: duplicate key 'lr'");
}

TEST(ReadYaml, KeysMustBeScalars) {
  EXPECT_EQ(error_of([] { read_yaml_string("[a]: 1\n", "r.yaml"); }),
            "r.yaml:1:1: map keys must be plain strings (got a list)");
}

TEST(ReadYaml, OneDocumentOnly) {
  EXPECT_EQ(error_of([] { read_yaml_string("a: 1\n---\nb: 2\n", "r.yaml"); }),
            "r.yaml:2:1: a recipe holds one YAML document (found a second one)");
}

TEST(ReadYaml, FileErrors) {
  TempDir dir;
  std::string missing = dir.file("nope.yaml");
  try {
    read_yaml_file(missing);
    FAIL() << "no error";
  } catch (const ConfigError&) {
    FAIL() << "a missing file is not a ConfigError";
  } catch (const UserError& e) {
    EXPECT_EQ(std::string(e.what()), "cannot read recipe '" + missing + "': No such file or directory");
  }
  try {
    read_yaml_file(dir.path().string());
    FAIL() << "no error";
  } catch (const UserError& e) {
    EXPECT_EQ(std::string(e.what()), "cannot read recipe '" + dir.path().string() + "': Is a directory");
  }
  write_file(dir.file("empty.yaml"), "");
  auto root = read_yaml_file(dir.file("empty.yaml"));
  EXPECT_EQ(root->kind, ConfigValue::Kind::Map);
  write_file(dir.file("bad.yaml"), "a: 1\nb: [\n");
  auto what = error_of([&] { read_yaml_file(dir.file("bad.yaml")); });
  EXPECT_EQ(what.rfind(dir.file("bad.yaml") + ":", 0), 0u) << what;
}

// ---------------------------------------------------------------------------------------------
// Merging

TEST(MergeTrees, MapsMergeAndEverythingElseIsReplaced) {
  auto base = read_yaml_string(
      "model: lenet5\ntrain:\n  epochs: 10\n  lr: 0.1\n  milestones: [3, 6, 9]\ndata: {batch: 64}\n", "base.yaml");
  auto over = read_yaml_string("train:\n  lr: 0.05\n  milestones: [2]\n  warmup: 1\nextra: x\n", "top.yaml");
  auto merged = merge_trees(base, over);
  ConfigNode n(merged, "");
  EXPECT_EQ(n.keys(), (std::vector<std::string>{"model", "train", "data", "extra"}));
  EXPECT_EQ(n["train"].keys(), (std::vector<std::string>{"epochs", "lr", "milestones", "warmup"}));
  EXPECT_EQ(n["train"]["epochs"].as<int>(), 10);
  EXPECT_DOUBLE_EQ(n["train"]["lr"].as<double>(), 0.05);
  EXPECT_EQ(n["train"]["milestones"].as<std::vector<int>>(), (std::vector<int>{2}));
  // Locations are those of the value that won.
  EXPECT_EQ(n["train"]["epochs"].location().file, "base.yaml");
  EXPECT_EQ(n["train"]["lr"].location().str(), "top.yaml:2:7");
  EXPECT_EQ(n["train"].location().file, "top.yaml");
  // Inputs are unchanged, and the result shares nothing with them.
  EXPECT_EQ(ConfigNode(base, "")["train"]["milestones"].size(), 3u);
  merged->find("data")->find("batch")->scalar = "1";
  EXPECT_EQ(base->find("data")->find("batch")->scalar, "64");
}

TEST(MergeTrees, ScalarOverMapReplaces) {
  auto merged = merge_trees(read_yaml_string("a: {b: 1}\n", "x"), read_yaml_string("a: 3\n", "y"));
  EXPECT_EQ(ConfigNode(merged, "")["a"].as<int>(), 3);
}

// ---------------------------------------------------------------------------------------------
// base:

TEST(LoadRecipe, BaseFromTheSameFolder) {
  TempDir dir;
  write_file(dir.file("common.yaml"), "model: lenet5\ntrain:\n  epochs: 10\n  lr: 0.1\n  milestones: [3, 6]\n");
  write_file(dir.file("r.yaml"), "base: common.yaml\ntrain:\n  lr: 0.01\n  milestones: [1]\n");
  auto n = load_recipe(dir.file("r.yaml"));
  EXPECT_FALSE(n.has("base"));
  EXPECT_EQ(n["model"].as<std::string>(), "lenet5");
  EXPECT_EQ(n["train"]["epochs"].as<int>(), 10);
  EXPECT_DOUBLE_EQ(n["train"]["lr"].as<double>(), 0.01);
  EXPECT_EQ(n["train"]["milestones"].as<std::vector<int>>(), (std::vector<int>{1}));
  EXPECT_EQ(n["train"]["epochs"].location().str(), dir.file("common.yaml") + ":3:11");
  EXPECT_EQ(n["train"]["lr"].location().str(), dir.file("r.yaml") + ":3:7");
  EXPECT_EQ(n.location().str(), dir.file("r.yaml") + ":1:1");
}

TEST(LoadRecipe, NameWithoutYamlSuffix) {
  TempDir dir;
  write_file(dir.file("common.yaml"), "a: 1\n");
  write_file(dir.file("r.yaml"), "base: common\nb: 2\n");
  auto n = load_recipe(dir.file("r.yaml"));
  EXPECT_EQ(n["a"].as<int>(), 1);
  EXPECT_EQ(n["b"].as<int>(), 2);
}

TEST(LoadRecipe, SeveralBasesInOrderAndBasesOfBases) {
  TempDir dir;
  write_file(dir.file("root.yaml"), "a: root\nb: root\nc: root\nd: root\n");
  write_file(dir.file("one.yaml"), "base: root.yaml\nb: one\nc: one\n");
  write_file(dir.file("two.yaml"), "c: two\n");
  write_file(dir.file("r.yaml"), "d: own\nbase: [one.yaml, two.yaml]\n");
  auto n = load_recipe(dir.file("r.yaml"));
  EXPECT_EQ(n["a"].as<std::string>(), "root");
  EXPECT_EQ(n["b"].as<std::string>(), "one");
  EXPECT_EQ(n["c"].as<std::string>(), "two");
  EXPECT_EQ(n["d"].as<std::string>(), "own");
  EXPECT_EQ(n.keys(), (std::vector<std::string>{"a", "b", "c", "d"}));
}

TEST(LoadRecipe, BaseFoundInAConfigsFolderOfAnAncestor) {
  TempDir dir;
  fs::create_directories(dir.path() / "configs" / "data");
  fs::create_directories(dir.path() / "recipes" / "deep");
  write_file((dir.path() / "configs" / "data" / "fmnist.yaml").string(), "data:\n  name: fashion-mnist\n");
  write_file((dir.path() / "recipes" / "deep" / "r.yaml").string(), "base: data/fmnist.yaml\nmodel: lenet5\n");
  auto n = load_recipe((dir.path() / "recipes" / "deep" / "r.yaml").string());
  EXPECT_EQ(n["data"]["name"].as<std::string>(), "fashion-mnist");
  EXPECT_EQ(n["data"]["name"].location().line, 2);
}

TEST(LoadRecipe, BaseFoundThroughTheEnvironment) {
  TempDir dir, other;
  write_file(other.file("shared.yaml"), "x: 1\n");
  write_file(dir.file("r.yaml"), "base: shared\n");
  ScopedEnv env("SHRINK_CONFIG_PATH", "/nonexistent-shrink:" + other.path().string());
  EXPECT_EQ(load_recipe(dir.file("r.yaml"))["x"].as<int>(), 1);
}

TEST(ConfigSearchPath, OrderAndNoDuplicates) {
  TempDir dir;
  fs::create_directories(dir.path() / "configs");
  fs::create_directories(dir.path() / "a" / "configs");
  fs::create_directories(dir.path() / "a" / "b");
  ScopedEnv env("SHRINK_CONFIG_PATH", (dir.path() / "configs").string() + ":" + (dir.path() / "x").string());
  auto path = config_search_path((dir.path() / "a" / "b" / "r.yaml").string());
  ASSERT_GE(path.size(), 4u);
  std::string root = fs::path(dir.path()).lexically_normal().string();
  EXPECT_EQ(path[0], root + "/a/b");
  EXPECT_EQ(path[1], root + "/a/configs");
  EXPECT_EQ(path[2], root + "/configs");
  EXPECT_EQ(path[3], root + "/x");  // from the environment; the first entry was already listed
  for (size_t i = 0; i < path.size(); ++i)
    for (size_t j = i + 1; j < path.size(); ++j) EXPECT_NE(path[i], path[j]);
}

TEST(LoadRecipe, BaseNotFound) {
  TempDir dir;
  write_file(dir.file("r.yaml"), "model: lenet5\nbase:\n  - data/foo.yaml\n");
  ScopedEnv env("SHRINK_CONFIG_PATH", "");
  auto what = error_of([&] { load_recipe(dir.file("r.yaml")); });
  std::string prefix = dir.file("r.yaml") + ":3:5: base[0]: base 'data/foo.yaml' not found; looked in: " +
                       dir.path().lexically_normal().string();
  EXPECT_EQ(what.substr(0, prefix.size()), prefix) << what;
}

TEST(LoadRecipe, BaseCycle) {
  TempDir dir;
  write_file(dir.file("a.yaml"), "base: b.yaml\n");
  write_file(dir.file("b.yaml"), "x: 1\nbase: a.yaml\n");
  auto what = error_of([&] { load_recipe(dir.file("a.yaml")); });
  EXPECT_EQ(what, dir.file("b.yaml") + ":2:7: base: base cycle: " + dir.file("a.yaml") + " -> " + dir.file("b.yaml") +
                      " -> " + dir.file("a.yaml"));
}

TEST(LoadRecipe, SelfBaseIsACycle) {
  TempDir dir;
  write_file(dir.file("a.yaml"), "base: a\n");
  auto what = error_of([&] { load_recipe(dir.file("a.yaml")); });
  EXPECT_EQ(what, dir.file("a.yaml") + ":1:7: base: base cycle: " + dir.file("a.yaml") + " -> " + dir.file("a.yaml"));
}

TEST(LoadRecipe, BaseMustBeNames) {
  TempDir dir;
  write_file(dir.file("r.yaml"), "base: {a: 1}\n");
  EXPECT_EQ(error_of([&] { load_recipe(dir.file("r.yaml")); }),
            dir.file("r.yaml") + ":1:7: base: expected a file name or a list of file names (got a map)");
}

TEST(LoadRecipe, RecipeMustBeAMap) {
  TempDir dir;
  write_file(dir.file("r.yaml"), "- a\n- b\n");
  EXPECT_EQ(error_of([&] { load_recipe(dir.file("r.yaml")); }),
            dir.file("r.yaml") + ":1:1: a recipe must be a map of keys (got a list)");
}

// ---------------------------------------------------------------------------------------------
// --set

TEST(ApplyOverride, ScalarsNestedAndNewKeys) {
  auto root = read_yaml_string("train:\n  epochs: 10\n  lr: 0.1\n", "r.yaml");
  apply_override(root, "train.epochs=3", 0);
  apply_override(root, "train.optimizer.name=adam", 1);
  apply_override(root, "seed=7", 2);
  ConfigNode n(root, "");
  EXPECT_EQ(n["train"]["epochs"].as<int>(), 3);
  EXPECT_EQ(n["train"]["epochs"].location().str(), "--set:1:14");
  EXPECT_EQ(n["train"]["optimizer"]["name"].as<std::string>(), "adam");
  EXPECT_EQ(n["train"]["optimizer"]["name"].location().str(), "--set:2:22");
  EXPECT_EQ(n["train"]["optimizer"].location().str(), "--set:2:7");
  EXPECT_EQ(n["seed"].as<int>(), 7);
  EXPECT_EQ(n.keys(), (std::vector<std::string>{"train", "seed"}));
}

TEST(ApplyOverride, ListValuesAndIndices) {
  auto root = read_yaml_string("train:\n  milestones: [3, 6]\ncompression:\n  - type: a\n    final_sparsity: 0.5\n"
                               "  - type: b\n",
                               "r.yaml");
  apply_override(root, "train.milestones=[1, 2, 4]", 0);
  apply_override(root, "compression[0].final_sparsity=0.8", 1);
  apply_override(root, "compression[1]={type: c, bits: 4}", 2);
  apply_override(root, "train.milestones[2]=5", 3);
  ConfigNode n(root, "");
  EXPECT_EQ(n["train"]["milestones"].as<std::vector<int>>(), (std::vector<int>{1, 2, 5}));
  EXPECT_EQ(n["train"]["milestones"].at(1).location().str(), "--set:1:22");
  EXPECT_DOUBLE_EQ(n["compression"].at(0)["final_sparsity"].as<double>(), 0.8);
  EXPECT_EQ(n["compression"].at(0)["type"].as<std::string>(), "a");
  EXPECT_EQ(n["compression"].at(1)["type"].as<std::string>(), "c");
  EXPECT_EQ(n["compression"].at(1)["bits"].as<int>(), 4);
}

TEST(ApplyOverride, ValuesAreYaml) {
  auto root = read_yaml_string("a: 1\n", "r.yaml");
  apply_override(root, "s=", 0);
  apply_override(root, "q=\"3\"", 1);
  apply_override(root, "n=null", 2);
  apply_override(root, "u=a=b", 3);
  ConfigNode n(root, "");
  EXPECT_TRUE(n["s"].is_scalar());
  EXPECT_EQ(n["s"].as<std::string>(), "");
  EXPECT_TRUE(n["q"].value()->quoted);
  EXPECT_TRUE(n["n"].is_null());
  EXPECT_EQ(n["u"].as<std::string>(), "a=b");
}

TEST(ApplyOverride, Errors) {
  auto root = read_yaml_string("train:\n  epochs: 10\ncompression:\n  - type: a\n  - type: b\n", "r.yaml");
  EXPECT_EQ(error_of([&] { apply_override(root, "train.epochs", 0); }),
            "--set:1:1: expected KEY=VALUE (got 'train.epochs')");
  EXPECT_EQ(error_of([&] { apply_override(root, "compression[5].type=x", 1); }),
            "--set:2:12: compression: index 5 out of range (list has 2 items)");
  EXPECT_EQ(error_of([&] { apply_override(root, "train[0]=x", 2); }), "--set:3:6: 'train' is not a list");
  EXPECT_EQ(error_of([&] { apply_override(root, "train.epochs.x=1", 0); }),
            "--set:1:14: 'train.epochs' is not a map (it is a scalar)");
  EXPECT_EQ(error_of([&] { apply_override(root, "train..x=1", 0); }), "--set:1:7: empty key in 'train..x'");
  EXPECT_EQ(error_of([&] { apply_override(root, "compression[x].type=1", 0); }),
            "--set:1:13: expected a list index in [] (got 'x')");
  EXPECT_EQ(error_of([&] { apply_override(root, "=1", 0); }), "--set:1:1: missing key before '=' in '=1'");
  EXPECT_EQ(error_of([&] { apply_override(root, "train.epochs=[1, 2]]", 0); }),
            "--set:1:20: train.epochs: YAML syntax error: illegal flow end");
  EXPECT_EQ(error_of([&] { apply_override(root, "fresh.sub[0]=1", 0); }), "--set:1:10: 'fresh.sub' is not a list");
  // Nothing was changed by the failed overrides.
  EXPECT_EQ(ConfigNode(root, "")["train"]["epochs"].as<int>(), 10);
  EXPECT_FALSE(root->find("fresh"));
}

TEST(ApplyOverride, NullMapBecomesAMap) {
  auto root = read_yaml_string("train:\n", "r.yaml");
  apply_override(root, "train.epochs=2", 0);
  EXPECT_EQ(ConfigNode(root, "")["train"]["epochs"].as<int>(), 2);
}

TEST(LoadRecipe, EndToEnd) {
  TempDir dir;
  fs::create_directories(dir.path() / "configs");
  write_file((dir.path() / "configs" / "train.yaml").string(),
             "train:\n  epochs: 10\n  optimizer: {name: sgd, lr: 0.1}\n  milestones: [5, 8]\n");
  write_file(dir.file("r.yaml"),
             "base: train\nmodel: lenet5\ntrain:\n  epochs: 4\ncompression:\n  - type: magnitude\n"
             "    final_sparsity: 0.5\n");
  auto n = load_recipe(dir.file("r.yaml"), {"compression[0].final_sparsity=0.9", "train.optimizer.lr=0.05"});
  EXPECT_EQ(n.keys(), (std::vector<std::string>{"train", "model", "compression"}));
  EXPECT_EQ(n["train"]["epochs"].as<int>(), 4);
  EXPECT_EQ(n["train"]["optimizer"]["name"].as<std::string>(), "sgd");
  EXPECT_DOUBLE_EQ(n["train"]["optimizer"]["lr"].as<double>(), 0.05);
  EXPECT_EQ(n["train"]["optimizer"]["lr"].location().str(), "--set:2:20");
  EXPECT_EQ(n["train"]["milestones"].as<std::vector<int>>(), (std::vector<int>{5, 8}));
  EXPECT_DOUBLE_EQ(n["compression"].at(0)["final_sparsity"].as<double>(), 0.9);
  EXPECT_EQ(n["train"]["milestones"].location().file, (dir.path() / "configs" / "train.yaml").string());
  // Errors on values from overrides point at the override.
  EXPECT_EQ(error_of([&] {
              load_recipe(dir.file("r.yaml"), {"train.epochs=many"})["train"]["epochs"].as<int>();
            }),
            "--set:1:14: train.epochs: expected an integer (got 'many')");
  EXPECT_EQ(error_of([&] { load_recipe(dir.file("r.yaml"), {"a=1", "compression[3].x=1"}); }),
            "--set:2:12: compression: index 3 out of range (list has 1 item)");
}

// ---------------------------------------------------------------------------------------------
// to_yaml

TEST(ToYaml, RoundTrips) {
  std::string text =
      "model: lenet5\n"
      "seed: 7\n"
      "name: \"007\"\n"
      "flag: yes\n"
      "empty:\n"
      "blank: \"\"\n"
      "tricky: \"a: b # c\"\n"
      "multi: \"two\\nlines\"\n"
      "train:\n"
      "  lr: 1e-4\n"
      "  milestones: [3, 6]\n"
      "  nested: {a: [], b: {}}\n"
      "compression:\n"
      "  - type: magnitude\n"
      "    targets: [conv1, \"fc1\"]\n"
      "  - [1, [2, 3]]\n";
  auto tree = read_yaml_string(text, "r.yaml");
  std::string yaml = to_yaml(tree);
  auto back = read_yaml_string(yaml, "out.yaml");
  expect_same_tree(tree, back);
  // And again: the emitted text is stable.
  EXPECT_EQ(to_yaml(back), yaml);
  EXPECT_NE(yaml.find("model: lenet5\n"), std::string::npos) << yaml;
  EXPECT_NE(yaml.find("name: \"007\"\n"), std::string::npos) << yaml;
}

TEST(ToYaml, EmptyTree) {
  auto back = read_yaml_string(to_yaml(ConfigValue::make_map()), "x");
  EXPECT_EQ(back->kind, ConfigValue::Kind::Map);
  EXPECT_TRUE(back->entries.empty());
}

TEST(ToYaml, ResolvedRecipeReproducesIt) {
  TempDir dir;
  write_file(dir.file("common.yaml"), "train: {epochs: 10, lr: 0.1}\n");
  write_file(dir.file("r.yaml"), "base: common.yaml\ntrain: {lr: 0.01}\n");
  auto n = load_recipe(dir.file("r.yaml"), {"train.epochs=2"});
  write_file(dir.file("resolved.yaml"), to_yaml(n.value()));
  auto again = load_recipe(dir.file("resolved.yaml"));
  expect_same_tree(n.value(), again.value());
  EXPECT_EQ(again["train"]["epochs"].as<int>(), 2);
}

}  // namespace
}  // namespace shrink

namespace shrink {
TEST(RecipeFile, UnknownKeyFromABasePointsAtTheKeyInTheBase) {
  test::TempDir tmp;
  test::write_file(tmp.file("base.yaml"), "train:\n  epochs: 2\n  epocs: 3\n");
  test::write_file(tmp.file("r.yaml"), "base: base.yaml\ntrain:\n  epochs: 4\n");
  auto root = load_recipe(tmp.file("r.yaml"));
  EXPECT_EQ(test::error_of([&] { root["train"].check_keys({"epochs"}); }),
            tmp.file("base.yaml") + ":3:3: train.epocs: unknown key 'epocs' (did you mean 'epochs'?)");
}
}  // namespace shrink
