#pragma once
// Compression methods' and callbacks' state as bytes: one torch archive with an entry
// "cb<i>_<name>" per method/callback of the experiment (the keys checkpoints use). Model files
// that cannot rebuild their structure from the recipe alone (e.g. removed channels) store it:
// the Deep Compression file and the int8 model file.
#include <string>
#include <vector>

namespace shrink {

class Callback;
struct Experiment;

/// The serialized state of the experiment's methods and callbacks: those with `include[i]`, or
/// all when `include` is empty.
std::string save_method_state(const Experiment& experiment, const std::vector<bool>& include = {});

/// The serialized state of one callback (its own archive, no "cb<i>_" entry around it).
std::string callback_state_bytes(const Callback& callback);

/// Loads the entries of `state` (from save_method_state) into the experiment's callbacks;
/// callbacks without an entry keep their fresh state. "" loads nothing. An unreadable state, or
/// an entry that fits no callback, is a UserError starting with `source` (e.g. "int8 model 'm.q8'").
void load_method_state(const std::string& state, Experiment& experiment, const std::string& source);

}  // namespace shrink
