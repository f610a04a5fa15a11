#include "shrink/train/method_state.h"

#include <set>

#include "shrink/core/error.h"
#include "shrink/train/experiment.h"

namespace shrink {
namespace {

std::string callback_key(size_t index, const Callback& cb) { return "cb" + std::to_string(index) + "_" + cb.name(); }

std::string archive_bytes(torch::serialize::OutputArchive& archive) {
  std::string out;
  archive.save_to([&out](const void* data, size_t size) -> size_t {
    out.append(static_cast<const char*>(data), size);
    return size;
  });
  return out;
}

}  // namespace

std::string save_method_state(const Experiment& e, const std::vector<bool>& include) {
  torch::serialize::OutputArchive archive;
  auto cbs = e.all_callbacks();
  for (size_t i = 0; i < cbs.size(); ++i) {
    if (!include.empty() && (i >= include.size() || !include[i])) continue;
    torch::serialize::OutputArchive cb_archive;
    cbs[i]->save_state(cb_archive);
    archive.write(callback_key(i, *cbs[i]), cb_archive);
  }
  return archive_bytes(archive);
}

std::string callback_state_bytes(const Callback& callback) {
  torch::serialize::OutputArchive archive;
  callback.save_state(archive);
  return archive_bytes(archive);
}

void load_method_state(const std::string& state, Experiment& e, const std::string& source) {
  if (state.empty()) return;
  torch::serialize::InputArchive archive;
  try {
    archive.load_from(state.data(), state.size());
  } catch (const c10::Error& err) {
    throw UserError(source + ": unreadable method state (" + std::string(err.what_without_backtrace()) + ")");
  }
  auto cbs = e.all_callbacks();
  std::set<std::string> known;
  for (size_t i = 0; i < cbs.size(); ++i) {
    known.insert(callback_key(i, *cbs[i]));
    torch::serialize::InputArchive cb_archive;
    if (archive.try_read(callback_key(i, *cbs[i]), cb_archive)) cbs[i]->load_state(cb_archive);
  }
  // Other "cb" entries were written for another recipe: loading would silently drop them.
  for (const auto& key : archive.keys())
    if (key.rfind("cb", 0) == 0 && !known.count(key))
      throw UserError(source + " holds state for '" + key +
                      "', which is not a compression entry/callback of the recipe (written for another recipe?)");
}

}  // namespace shrink
