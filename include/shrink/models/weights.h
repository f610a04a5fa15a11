#pragma once
// Loading pretrained weights into a model: from a Shrink checkpoint, a TorchScript module saved
// by PyTorch (`torch.jit.script(m).save(path)`) or by LibTorch (`torch::save(module, path)`),
// or a state_dict saved by `torch.save(model.state_dict(), path)`.
//
// In a recipe, `model.weights` is a path or a map:
// ```yaml
// model:
//   name: resnet18
//   weights:
//     path: resnet18_torchvision.pt  # relative paths: from the working directory
//     format: torchscript            # auto | checkpoint | torchscript | state_dict
//     exclude: ["fc.*"]              # model names not to load (globs), e.g. a new classifier
//     rename: {"module.": ""}        # prefix replacements applied to the file's names
//     strict: true                   # every model tensor not excluded must be loaded
// ```
// Tensors are matched by dotted name: the model's named_parameters() and named_buffers()
// (recursive) against the file's names after `rename`. Nothing is copied unless everything
// fits; otherwise one error lists every mismatch.
#include <torch/torch.h>

#include <string>
#include <utility>
#include <vector>

#include "shrink/config/node.h"

namespace shrink {

/// How a weights file is read.
enum class WeightsFormat {
  /// A Shrink checkpoint, then a TorchScript module, then a state_dict: the first that reads.
  Auto,
  /// A Shrink checkpoint or export (`shrink train` output): the tensors of its "model" entry.
  Checkpoint,
  /// A TorchScript module (`torch.jit.script(m).save(path)` in Python, `torch::save(module,
  /// path)` or `torch::jit::Module::save` in C++): its parameters and buffers, recursively.
  /// A Shrink checkpoint read this way shows names prefixed with "model.".
  TorchScript,
  /// A dict of name -> tensor saved by Python's `torch.save` in the zip format (PyTorch >= 1.6
  /// default), e.g. `torch.save(model.state_dict(), path)`. Not the legacy format
  /// (`_use_new_zipfile_serialization=False`, and files from before 1.6), and not a dict that
  /// nests the state_dict under a key (convert it: `torch.save(ckpt["state_dict"], path)`).
  StateDict,
};

/// "auto", "checkpoint", "torchscript", "state_dict".
const char* weights_format_name(WeightsFormat format);

/// What to load and how to match names. Plain struct: the C++ API works without YAML.
struct WeightsSpec {
  std::string path;                     ///< relative paths are taken from the working directory
  WeightsFormat format = WeightsFormat::Auto;
  /// Globs (`*` any text, dots included; `?` one character; `[abc]`) on model names (and on the
  /// file's names after `rename`): those tensors are neither loaded nor checked; the model keeps
  /// its own initialization for them. E.g. {"fc.*"} to train a new classifier.
  std::vector<std::string> exclude;
  /// Prefix replacements {from, to} applied to each name in the file before matching: the first
  /// rule whose `from` starts the name applies (one rule per name). {"module.", ""} drops the
  /// prefix DataParallel adds; {"", "backbone."} adds one.
  std::vector<std::pair<std::string, std::string>> rename;
  /// true: every model tensor not excluded must be in the file, and every tensor in the file
  /// (not excluded) must have a counterpart in the model. false: both are allowed and only
  /// listed in the report. Shape differences are errors either way.
  bool strict = true;
};

/// Parses `model.weights`: a path (string) or a map with keys path (required), format, exclude,
/// rename (a map from prefix to replacement, in file order), strict. ConfigErrors name the key.
WeightsSpec parse_weights_spec(const ConfigNode& node);

/// What load_weights did. Names are the model's dotted names unless said otherwise.
struct WeightsReport {
  std::string path;
  WeightsFormat format = WeightsFormat::Auto;  ///< the format the file was read as
  std::vector<std::string> loaded;             ///< copied from the file
  std::vector<std::string> excluded;           ///< model tensors left as they were (exclude)
  std::vector<std::string> missing;            ///< not in the file (only when strict is false)
  std::vector<std::string> unused;             ///< file names (after rename) not loaded: excluded or unmatched
  /// One line, e.g. "loaded 8 tensors from 'w.pt' (torchscript); 2 excluded, 0 missing, 2 unused".
  std::string summary() const;
};

/// The tensors of a weights file by dotted name (file order), as read in `format` (Auto tries
/// checkpoint, TorchScript, state_dict in that order). `read_as` receives the format used.
/// UserError naming the file when it is missing or no format reads it (saying why each failed).
std::vector<std::pair<std::string, torch::Tensor>> read_weights_file(const std::string& path, WeightsFormat format,
                                                                     WeightsFormat* read_as = nullptr);

/// Loads `spec` into `model` (copies under NoGradGuard into the existing tensors, converting
/// dtype and device; shapes must be equal). Checks everything first: on any mismatch nothing is
/// copied and one UserError names the file and lists every problem (missing names, unmatched
/// file names when strict, shape differences as "name: model AxB vs file CxD"; long lists are
/// cut after 20 names) with a hint about rename/exclude/strict.
WeightsReport load_weights(torch::nn::Module& model, const WeightsSpec& spec);

/// parse_weights_spec + load_weights for `model.weights`; a null node loads nothing. Errors are
/// ConfigErrors at the node ("file:line:col: model.weights: ...").
WeightsReport load_weights(torch::nn::Module& model, const ConfigNode& weights);

}  // namespace shrink
