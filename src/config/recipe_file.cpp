#include <dlfcn.h>
#include "shrink/config/recipe_file.h"

#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <system_error>

namespace shrink {

namespace fs = std::filesystem;

namespace {

std::string child_path(const std::string& parent, const std::string& key) {
  return parent.empty() ? key : parent + "." + key;
}

std::string item_path(const std::string& parent, size_t index) {
  return parent + "[" + std::to_string(index) + "]";
}

const char* kind_name(ConfigValue::Kind kind) {
  switch (kind) {
    case ConfigValue::Kind::Null: return "null";
    case ConfigValue::Kind::Scalar: return "a scalar";
    case ConfigValue::Kind::Sequence: return "a list";
    case ConfigValue::Kind::Map: return "a map";
  }
  return "?";
}

// ---------------------------------------------------------------------------------------------
// YAML events -> ConfigValue tree, with a location on every node.

class TreeBuilder : public YAML::EventHandler {
 public:
  explicit TreeBuilder(std::string source) : source_(std::move(source)) {}

  ConfigValuePtr root() const { return root_; }

  void OnDocumentStart(const YAML::Mark& mark) override {
    if (++documents_ > 1)
      throw ConfigError(location(mark), "", "a recipe holds one YAML document (found a second one)");
  }
  void OnDocumentEnd() override {}

  void OnNull(const YAML::Mark& mark, YAML::anchor_t anchor) override {
    auto v = std::make_shared<ConfigValue>();
    v->kind = ConfigValue::Kind::Null;
    v->location = location(mark);
    remember(anchor, v);
    add(v);
  }

  void OnAlias(const YAML::Mark& mark, YAML::anchor_t anchor) override {
    auto it = anchors_.find(anchor);
    if (it == anchors_.end()) throw ConfigError(location(mark), "", "unknown alias");
    add(it->second->deep_copy());
  }

  void OnScalar(const YAML::Mark& mark, const std::string& tag, YAML::anchor_t anchor,
                const std::string& value) override {
    auto v = ConfigValue::make_scalar(value, location(mark));
    // yaml-cpp tags plain scalars "?" and quoted or block scalars "!"; `!!str` forces a string.
    v->quoted = tag == "!" || tag == "tag:yaml.org,2002:str";
    remember(anchor, v);
    add(v);
  }

  void OnSequenceStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t anchor,
                       YAML::EmitterStyle::value) override {
    auto v = ConfigValue::make_sequence(location(mark));
    remember(anchor, v);
    push(v, mark);
  }
  void OnSequenceEnd() override { pop(); }

  void OnMapStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t anchor,
                  YAML::EmitterStyle::value) override {
    auto v = ConfigValue::make_map(location(mark));
    remember(anchor, v);
    push(v, mark);
  }
  void OnMapEnd() override {
    if (!stack_.empty() && stack_.back().have_key) {
      // Cannot happen with yaml-cpp (a key always gets a value), but keep the tree whole.
      auto v = std::make_shared<ConfigValue>();
      v->location = stack_.back().key_location;
      add(v);
    }
    pop();
  }

 private:
  struct Frame {
    ConfigValuePtr node;
    std::string path;
    bool have_key = false;
    std::string key;
    SourceLocation key_location;
  };

  SourceLocation location(const YAML::Mark& mark) const {
    if (mark.line < 0) return SourceLocation{source_, 0, 0};
    return SourceLocation{source_, mark.line + 1, mark.column + 1};
  }

  void remember(YAML::anchor_t anchor, const ConfigValuePtr& v) {
    if (anchor != YAML::NullAnchor) anchors_[anchor] = v;
  }

  /// The path a value added now would get.
  std::string next_path() const {
    if (stack_.empty()) return "";
    const Frame& top = stack_.back();
    if (top.node->kind == ConfigValue::Kind::Sequence) return item_path(top.path, top.node->items.size());
    if (top.have_key) return child_path(top.path, top.key);
    return top.path;
  }

  void push(const ConfigValuePtr& v, const YAML::Mark& mark) {
    if (!stack_.empty() && stack_.back().node->kind == ConfigValue::Kind::Map && !stack_.back().have_key)
      throw ConfigError(location(mark), stack_.back().path, "map keys must be plain strings (got " +
                                                                std::string(kind_name(v->kind)) + ")");
    Frame frame;
    frame.node = v;
    frame.path = next_path();
    stack_.push_back(std::move(frame));
  }

  void pop() {
    auto v = stack_.back().node;
    stack_.pop_back();
    add(v);
  }

  void add(const ConfigValuePtr& v) {
    if (stack_.empty()) {
      root_ = v;
      return;
    }
    Frame& top = stack_.back();
    if (top.node->kind == ConfigValue::Kind::Sequence) {
      top.node->items.push_back(v);
      return;
    }
    if (!top.have_key) {
      if (v->kind != ConfigValue::Kind::Scalar)
        throw ConfigError(v->location, top.path,
                          std::string("map keys must be plain strings (got ") + kind_name(v->kind) + ")");
      top.key = v->scalar;
      top.key_location = v->location;
      top.have_key = true;
      return;
    }
    std::string path = child_path(top.path, top.key);
    if (top.node->find(top.key)) throw ConfigError(top.key_location, path, "duplicate key '" + top.key + "'");
    // An empty value (`key:`) has no text of its own: it is where its key is.
    if (v->kind == ConfigValue::Kind::Null) v->location = top.key_location;
    v->key_location = top.key_location;
    top.node->entries.emplace_back(top.key, v);
    top.have_key = false;
  }

  std::string source_;
  std::vector<Frame> stack_;
  ConfigValuePtr root_;
  std::map<YAML::anchor_t, ConfigValuePtr> anchors_;
  int documents_ = 0;
};

// ---------------------------------------------------------------------------------------------
// base: resolution

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string normal(const fs::path& p) {
  std::error_code ec;
  fs::path abs = fs::absolute(p, ec);
  if (ec) abs = p;
  std::string s = abs.lexically_normal().string();
  while (s.size() > 1 && s.back() == '/') s.pop_back();
  return s;
}

bool is_file(const std::string& path) {
  std::error_code ec;
  return fs::is_regular_file(path, ec);
}

/// The file a `base:` entry names, or "" (with the folders looked in) when there is none.
std::string resolve_base(const std::string& name, const std::string& including_file,
                         std::vector<std::string>& looked_in) {
  std::vector<std::string> names{name};
  if (!ends_with(name, ".yaml") && !ends_with(name, ".yml")) names.push_back(name + ".yaml");
  if (fs::path(name).is_absolute()) {
    for (const auto& n : names)
      if (is_file(n)) return n;
    return "";
  }
  looked_in = config_search_path(including_file);
  for (const auto& dir : looked_in)
    for (const auto& n : names) {
      std::string candidate = (fs::path(dir) / n).lexically_normal().string();
      if (is_file(candidate)) return candidate;
    }
  return "";
}

ConfigValuePtr load_with_bases(const std::string& path, std::vector<std::string>& chain,
                               std::vector<std::string>& chain_names) {
  ConfigValuePtr own = read_yaml_file(path);
  if (own->kind != ConfigValue::Kind::Map)
    throw ConfigError(own->location, "",
                      std::string("a recipe must be a map of keys (got ") + kind_name(own->kind) + ")");
  ConfigValuePtr base_value = own->find("base");
  if (!base_value) return own;

  ConfigNode base_node(base_value, "base");
  if (!(base_node.is_scalar() || base_node.is_sequence() || base_node.is_null()))
    base_node.fail("expected a file name or a list of file names (got a map)");
  ConfigValuePtr merged;
  for (size_t i = 0; i < base_node.size(); ++i) {
    ConfigNode entry = base_node.at(i);
    std::string name = entry.as<std::string>();
    std::vector<std::string> looked_in;
    std::string found = resolve_base(name, path, looked_in);
    if (found.empty()) {
      std::string message = "base '" + name + "' not found";
      if (!looked_in.empty()) {
        message += "; looked in: ";
        for (size_t k = 0; k < looked_in.size(); ++k) message += (k ? ", " : "") + looked_in[k];
      }
      entry.fail(message);
    }
    std::string key = normal(found);
    for (size_t k = 0; k < chain.size(); ++k) {
      if (chain[k] != key) continue;
      std::string message = "base cycle: ";
      for (size_t j = k; j < chain_names.size(); ++j) message += chain_names[j] + " -> ";
      entry.fail(message + found);
    }
    chain.push_back(key);
    chain_names.push_back(found);
    ConfigValuePtr base_tree = load_with_bases(found, chain, chain_names);
    chain.pop_back();
    chain_names.pop_back();
    merged = merged ? merge_trees(merged, base_tree) : base_tree;
  }
  ConfigValuePtr top = own->deep_copy();
  top->erase("base");
  return merged ? merge_trees(merged, top) : top;
}

// ---------------------------------------------------------------------------------------------
// --set paths

struct PathStep {
  bool is_index = false;
  std::string key;
  size_t index = 0;
  size_t offset = 0;  ///< where the step starts in the assignment
  size_t end = 0;     ///< one past its end
};

void relocate(const ConfigValuePtr& v, int line, int column_base) {
  if (!v) return;
  v->location.file = "--set";
  int column = v->location.line == 1 ? column_base + v->location.column : column_base + 1;
  v->location.line = line;
  v->location.column = column;
  for (const auto& item : v->items) relocate(item, line, column_base);
  for (const auto& kv : v->entries) relocate(kv.second, line, column_base);
}

void emit(YAML::Emitter& out, const ConfigValuePtr& v) {
  if (!v || v->kind == ConfigValue::Kind::Null) {
    out << YAML::Null;
    return;
  }
  switch (v->kind) {
    case ConfigValue::Kind::Scalar:
      if (v->quoted || v->scalar.empty())
        out << YAML::DoubleQuoted << v->scalar;
      else
        out << v->scalar;
      break;
    case ConfigValue::Kind::Sequence:
      out << YAML::BeginSeq;
      for (const auto& item : v->items) emit(out, item);
      out << YAML::EndSeq;
      break;
    case ConfigValue::Kind::Map:
      out << YAML::BeginMap;
      for (const auto& kv : v->entries) {
        out << YAML::Key << kv.first << YAML::Value;
        emit(out, kv.second);
      }
      out << YAML::EndMap;
      break;
    case ConfigValue::Kind::Null: break;
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------

namespace {

/// The document's root as written (nullptr for an empty document).
ConfigValuePtr parse_yaml(const std::string& text, const std::string& source_name) {
  std::istringstream in(text);
  TreeBuilder builder(source_name);
  try {
    YAML::Parser parser(in);
    while (parser.HandleNextDocument(builder)) {
    }
  } catch (const YAML::Exception& e) {
    SourceLocation loc{source_name, 0, 0};
    if (e.mark.line >= 0) loc = SourceLocation{source_name, e.mark.line + 1, e.mark.column + 1};
    throw ConfigError(loc, "", "YAML syntax error: " + e.msg);
  }
  return builder.root();
}

}  // namespace

ConfigValuePtr read_yaml_string(const std::string& text, const std::string& source_name) {
  ConfigValuePtr root = parse_yaml(text, source_name);
  if (!root || root->kind == ConfigValue::Kind::Null) root = ConfigValue::make_map({source_name, 1, 1});
  return root;
}

ConfigValuePtr read_yaml_file(const std::string& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) throw UserError("cannot read recipe '" + path + "': " + std::strerror(EISDIR));
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    int err = errno;
    throw UserError("cannot read recipe '" + path + "': " + std::strerror(err ? err : ENOENT));
  }
  std::stringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw UserError("cannot read recipe '" + path + "': read error");
  return read_yaml_string(ss.str(), path);
}

std::vector<std::string> config_search_path(const std::string& including_file) {
  std::vector<std::string> out;
  auto add = [&out](const std::string& dir) {
    if (dir.empty()) return;
    std::string n = normal(dir);
    for (const auto& existing : out)
      if (existing == n) return;
    out.push_back(n);
  };
  auto is_dir = [](const fs::path& p) {
    std::error_code ec;
    return fs::is_directory(p, ec);
  };

  fs::path folder = fs::path(including_file).parent_path();
  if (folder.empty()) folder = ".";
  add(folder.string());

  fs::path dir = fs::path(normal(folder));
  while (true) {
    if (is_dir(dir / "configs")) add((dir / "configs").string());
    fs::path parent = dir.parent_path();
    if (parent.empty() || parent == dir) break;
    dir = parent;
  }

  if (const char* env = std::getenv("SHRINK_CONFIG_PATH")) {
    std::string list = env;
    size_t start = 0;
    while (start <= list.size()) {
      size_t colon = list.find(':', start);
      if (colon == std::string::npos) colon = list.size();
      add(list.substr(start, colon - start));
      start = colon + 1;
    }
  }

  // The installed configs beside this library (<prefix>/lib/../share/shrink/configs), wherever
  // the package was installed; then the prefix configured at build time.
  Dl_info info;
  if (dladdr(reinterpret_cast<void*>(&config_search_path), &info) && info.dli_fname) {
    auto share = fs::path(info.dli_fname).parent_path().parent_path() / "share" / "shrink" / "configs";
    if (is_dir(share)) add(share.string());
  }
#ifdef SHRINK_INSTALL_DATADIR
  if (is_dir(fs::path(SHRINK_INSTALL_DATADIR) / "configs")) add(std::string(SHRINK_INSTALL_DATADIR) + "/configs");
#endif
  return out;
}

ConfigValuePtr merge_trees(const ConfigValuePtr& base, const ConfigValuePtr& overlay) {
  if (!overlay) return base ? base->deep_copy() : nullptr;
  if (!base || base->kind != ConfigValue::Kind::Map || overlay->kind != ConfigValue::Kind::Map)
    return overlay->deep_copy();
  auto out = ConfigValue::make_map(overlay->location);
  out->key_location = overlay->key_location;
  for (const auto& kv : base->entries) {
    auto over = overlay->find(kv.first);
    out->entries.emplace_back(kv.first, over ? merge_trees(kv.second, over) : kv.second->deep_copy());
  }
  for (const auto& kv : overlay->entries)
    if (!base->find(kv.first)) out->entries.emplace_back(kv.first, kv.second->deep_copy());
  return out;
}

void apply_override(const ConfigValuePtr& root, const std::string& assignment, int index) {
  const int line = index + 1;
  auto error_at = [&](size_t offset, const std::string& key_path, const std::string& message) {
    return ConfigError(SourceLocation{"--set", line, static_cast<int>(offset) + 1}, key_path, message);
  };

  size_t eq = assignment.find('=');
  if (eq == std::string::npos)
    throw error_at(0, "", "expected KEY=VALUE (got '" + assignment + "')");
  if (eq == 0) throw error_at(0, "", "missing key before '=' in '" + assignment + "'");

  // Split the key into steps: `a.b[0].c`.
  std::vector<PathStep> steps;
  size_t pos = 0;
  while (pos < eq) {
    PathStep step;
    step.offset = pos;
    if (assignment[pos] == '[') {
      size_t close = assignment.find(']', pos);
      if (close == std::string::npos || close > eq) throw error_at(pos, "", "missing ']' in '" + assignment.substr(0, eq) + "'");
      std::string digits = assignment.substr(pos + 1, close - pos - 1);
      if (digits.empty() || digits.find_first_not_of("0123456789") != std::string::npos)
        throw error_at(pos + 1, "", "expected a list index in [] (got '" + digits + "')");
      step.is_index = true;
      step.index = std::stoul(digits);
      pos = close + 1;
    } else {
      if (!steps.empty()) {
        if (assignment[pos] != '.') throw error_at(pos, "", "expected '.' or '[' after ']' in '" + assignment.substr(0, eq) + "'");
        ++pos;
        step.offset = pos;
      }
      size_t end = pos;
      while (end < eq && assignment[end] != '.' && assignment[end] != '[') ++end;
      if (end == pos) throw error_at(pos, "", "empty key in '" + assignment.substr(0, eq) + "'");
      if (assignment[pos] == ']') throw error_at(pos, "", "unexpected ']' in '" + assignment.substr(0, eq) + "'");
      step.key = assignment.substr(pos, end - pos);
      pos = end;
    }
    step.end = pos;
    steps.push_back(step);
  }
  if (steps.empty() || steps.front().is_index)
    throw error_at(0, "", "an override starts with a key (got '" + assignment.substr(0, eq) + "')");

  // The value, parsed as YAML, located where it is in the assignment.
  std::string text = assignment.substr(eq + 1);
  ConfigValuePtr value;
  if (text.find_first_not_of(" \t") == std::string::npos) {
    value = ConfigValue::make_scalar(text);
    value->quoted = true;  // an empty value is the empty string, not null
    value->location = SourceLocation{"--set", line, static_cast<int>(eq) + 2};
  } else {
    try {
      value = parse_yaml(text, "--set");
      if (!value) {  // only a comment
        value = std::make_shared<ConfigValue>();
        value->location = SourceLocation{"--set", 1, 1};
      }
    } catch (const ConfigError& e) {
      const auto& l = e.location();
      throw ConfigError(SourceLocation{"--set", line, static_cast<int>(eq) + (l.line == 1 ? l.column : 1) + 1},
                        assignment.substr(0, eq), e.message());
    }
    relocate(value, line, static_cast<int>(eq) + 1);
  }

  // Walk the path twice: first only to check it (a failed override changes nothing), then to
  // apply it, creating missing maps. While checking, a map that would be created is nullptr.
  for (bool apply : {false, true}) {
    ConfigValuePtr cur = root;
    std::string path;
    for (size_t i = 0; i < steps.size(); ++i) {
      const PathStep& step = steps[i];
      const bool last = i + 1 == steps.size();
      const ConfigValue::Kind kind = cur ? cur->kind : ConfigValue::Kind::Map;
      if (step.is_index) {
        if (kind != ConfigValue::Kind::Sequence) throw error_at(step.offset, "", "'" + path + "' is not a list");
        size_t n = cur->items.size();
        if (step.index >= n)
          throw error_at(step.offset, path,
                         "index " + std::to_string(step.index) + " out of range (list has " + std::to_string(n) +
                             (n == 1 ? " item)" : " items)"));
        path = item_path(path, step.index);
        if (last && apply) cur->items[step.index] = value;
        if (!last) cur = cur->items[step.index];
      } else {
        // `key:` left empty in the file becomes a map.
        if (kind != ConfigValue::Kind::Map && kind != ConfigValue::Kind::Null)
          throw error_at(step.offset, "", "'" + path + "' is not a map (it is " + kind_name(kind) + ")");
        if (apply && kind == ConfigValue::Kind::Null) cur->kind = ConfigValue::Kind::Map;
        path = child_path(path, step.key);
        if (last) {
          if (apply) cur->set(step.key, value);
          break;
        }
        ConfigValuePtr next = cur && cur->kind == ConfigValue::Kind::Map ? cur->find(step.key) : nullptr;
        if (!next && apply) {
          next = ConfigValue::make_map(SourceLocation{"--set", line, static_cast<int>(step.offset) + 1});
          cur->set(step.key, next);
        }
        cur = next;
      }
    }
  }
}

ConfigNode load_recipe(const std::string& path, const std::vector<std::string>& overrides) {
  std::vector<std::string> chain{normal(path)};
  std::vector<std::string> chain_names{path};
  ConfigValuePtr tree = load_with_bases(path, chain, chain_names);
  tree->location = SourceLocation{path, 1, 1};
  for (size_t i = 0; i < overrides.size(); ++i) apply_override(tree, overrides[i], static_cast<int>(i));
  return ConfigNode(tree, "");
}

std::string to_yaml(const ConfigValuePtr& root) {
  YAML::Emitter out;
  out.SetMapFormat(YAML::Block);
  out.SetSeqFormat(YAML::Block);
  emit(out, root);
  std::string text = out.c_str();
  if (text.empty() || text.back() != '\n') text += '\n';
  return text;
}

}  // namespace shrink
