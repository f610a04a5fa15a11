#include <gtest/gtest.h>

#include "shrink/core/error.h"

namespace shrink {
namespace {

TEST(SourceLocation, StrLeavesOutUnknownParts) {
  EXPECT_EQ((SourceLocation{"a.yaml", 3, 7}.str()), "a.yaml:3:7");
  EXPECT_EQ((SourceLocation{"a.yaml", 3, 0}.str()), "a.yaml:3");
  EXPECT_EQ((SourceLocation{"a.yaml", 0, 0}.str()), "a.yaml");
  EXPECT_EQ((SourceLocation{"--set", 2, 5}.str()), "--set:2:5");
  EXPECT_EQ(SourceLocation{}.str(), "");
}

TEST(ConfigError, WhatHasLocationPathAndMessage) {
  ConfigError e({"r.yaml", 12, 5}, "compression[1].schedule.end_epoch", "must be greater");
  EXPECT_STREQ(e.what(), "r.yaml:12:5: compression[1].schedule.end_epoch: must be greater");
  EXPECT_EQ(e.location().line, 12);
  EXPECT_EQ(e.key_path(), "compression[1].schedule.end_epoch");
  EXPECT_EQ(e.message(), "must be greater");
}

TEST(ConfigError, EmptyPathAndUnknownLocationAreLeftOut) {
  EXPECT_STREQ(ConfigError({"r.yaml", 1, 2}, "", "bad").what(), "r.yaml:1:2: bad");
  EXPECT_STREQ(ConfigError({}, "train.lr", "bad").what(), "train.lr: bad");
  EXPECT_STREQ(ConfigError({}, "", "bad").what(), "bad");
}

TEST(ConfigError, IsAUserError) {
  try {
    throw ConfigError({"f", 1, 1}, "k", "m");
  } catch (const UserError& e) {
    EXPECT_STREQ(e.what(), "f:1:1: k: m");
    return;
  }
  FAIL() << "not caught as UserError";
}

TEST(EditDistance, Levenshtein) {
  EXPECT_EQ(edit_distance("", ""), 0u);
  EXPECT_EQ(edit_distance("abc", ""), 3u);
  EXPECT_EQ(edit_distance("", "abc"), 3u);
  EXPECT_EQ(edit_distance("epochs", "epochs"), 0u);
  EXPECT_EQ(edit_distance("epocs", "epochs"), 1u);
  EXPECT_EQ(edit_distance("kitten", "sitting"), 3u);
  EXPECT_EQ(edit_distance("flaw", "lawn"), 2u);
}

TEST(NearestName, SuggestsCloseNamesOnly) {
  std::vector<std::string> names{"epochs", "lr", "batch_size", "momentum"};
  EXPECT_EQ(nearest_name("epocs", names), "epochs");
  EXPECT_EQ(nearest_name("batchsize", names), "batch_size");
  EXPECT_EQ(nearest_name("momentun", names), "momentum");
  EXPECT_EQ(nearest_name("lrr", names), "lr");
  EXPECT_EQ(nearest_name("weight_decay", names), "");
  EXPECT_EQ(nearest_name("x", {}), "");
}

TEST(NearestName, ThresholdIsMaxOfTwoAndAThird) {
  // Short names allow distance 2, but never a complete rewrite.
  EXPECT_EQ(nearest_name("abc", {"xbz"}), "xbz");
  EXPECT_EQ(nearest_name("lr", {"l"}), "l");
  EXPECT_EQ(nearest_name("ab", {"xy"}), "");
  EXPECT_EQ(nearest_name("x", {"a"}), "");
  EXPECT_EQ(nearest_name("abc", {"xyz"}), "");
  // 12 characters allow distance 4.
  EXPECT_EQ(nearest_name("abcdefghijkl", {"abcdefghwxyz"}), "abcdefghwxyz");
  EXPECT_EQ(nearest_name("abcdefghijkl", {"abcdefgvwxyz"}), "");
}

TEST(NearestName, TiesGoToTheFirstCandidate) {
  EXPECT_EQ(nearest_name("cat", {"bat", "hat"}), "bat");
  EXPECT_EQ(nearest_name("cat", {"hat", "bat"}), "hat");
  EXPECT_EQ(nearest_name("cat", {"hat", "cat"}), "cat");
}

}  // namespace
}  // namespace shrink
