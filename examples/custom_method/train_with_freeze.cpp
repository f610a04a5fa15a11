// Trains a recipe with Shrink's C++ API; the freeze_layers method is compiled into this
// executable (freeze_layers.cpp), so its SHRINK_REGISTER_METHOD runs before main().
//
//   train_with_freeze RECIPE [--set key.path=value]... [--quiet]
//
// Prints, for every parameter, whether training changed it ("fc1.weight changed: no"), then the
// final test top-1.
#include <shrink/config/recipe_file.h>
#include <shrink/core/error.h>
#include <shrink/train/trainer.h>

#include <cstdio>
#include <iostream>
#include <map>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  std::string recipe_path;
  std::vector<std::string> overrides;
  bool quiet = false;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--set" && i + 1 < argc) {
      overrides.push_back(argv[++i]);
    } else if (arg == "--quiet") {
      quiet = true;
    } else if (recipe_path.empty() && arg.rfind("--", 0) != 0) {
      recipe_path = arg;
    } else {
      std::cerr << "usage: " << argv[0] << " RECIPE [--set key.path=value]... [--quiet]\n";
      return 2;
    }
  }
  if (recipe_path.empty()) {
    std::cerr << "usage: " << argv[0] << " RECIPE [--set key.path=value]... [--quiet]\n";
    return 2;
  }

  try {
    auto recipe = shrink::load_recipe(recipe_path, overrides);
    auto experiment = shrink::build_experiment(recipe);  // validates the whole recipe first
    shrink::apply_runtime_settings(experiment.recipe);

    std::map<std::string, torch::Tensor> before;
    for (const auto& item : experiment.model->named_parameters())
      before[item.key()] = item.value().detach().clone();

    shrink::TrainOptions options;
    options.run_dir = shrink::fresh_run_dir(experiment.recipe.output);
    options.quiet = quiet;
    auto result = shrink::train(experiment, options);
    if (result.interrupted) return 130;

    for (const auto& item : experiment.model->named_parameters()) {
      auto it = before.find(item.key());
      if (it == before.end()) continue;  // a layer replaced by a compression method
      bool same = it->second.sizes() == item.value().sizes() && torch::equal(it->second, item.value().detach());
      std::printf("%s changed: %s\n", item.key().c_str(), same ? "no" : "yes");
    }
    std::printf("final top-1: %.2f%%\n", result.final_eval.top1);
    std::printf("run directory: %s\n", result.run_dir.c_str());
    return 0;
  } catch (const shrink::UserError& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}
