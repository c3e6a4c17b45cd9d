#include <gtest/gtest.h>

#include <cstdio>
#include <string>

#include "pipelines/progress.h"

namespace ditkit {
namespace {

std::string read_all(std::FILE* f) {
  std::rewind(f);
  std::string s;
  char buf[256];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) s.append(buf, n);
  return s;
}

TEST(Progress, FormatShowsStepRateAndEta) {
  EXPECT_EQ(format_progress("denoise", 10, 50, 5.0), "denoise 10/50  20% 2.00 it/s ETA 0:20");
  // Slow loops switch to seconds per item.
  EXPECT_EQ(format_progress("denoise", 2, 50, 8.0), "denoise 2/50   4% 4.00 s/it ETA 3:12");
  EXPECT_EQ(format_progress("train", 0, 1000, 0.0), "train 0/1000   0% -- it/s ETA ?");
  EXPECT_EQ(format_progress("decode", 4, 4, 7261.0), "decode 4/4 100% 1815.25 s/it done in 2:01:01");
}

TEST(Progress, QuietWhenNotATerminal) {
  std::FILE* f = std::tmpfile();
  ASSERT_NE(f, nullptr);
  {
    Progress p("denoise", 3, f);  // a temporary file is not a terminal
    EXPECT_FALSE(p.enabled());
    for (int i = 0; i < 3; ++i) p.advance();
    p.finish();
  }
  EXPECT_EQ(read_all(f), "");
  std::fclose(f);
}

TEST(Progress, DrawsInPlaceAndEndsWithNewline) {
  std::FILE* f = std::tmpfile();
  ASSERT_NE(f, nullptr);
  {
    Progress p("denoise", 3, f, Progress::Mode::kAlways);
    for (int i = 0; i < 3; ++i) p.advance();
    p.finish();
    p.finish();  // idempotent
  }
  std::string s = read_all(f);
  EXPECT_EQ(s.front(), '\r');
  EXPECT_EQ(s.back(), '\n');
  EXPECT_EQ(s.find('\n'), s.size() - 1);
  EXPECT_NE(s.find("denoise 1/3"), std::string::npos);
  EXPECT_NE(s.find("denoise 3/3 100%"), std::string::npos);
  EXPECT_NE(s.find("done in"), std::string::npos);
  std::fclose(f);
}

TEST(Progress, DestructorEndsAnUnfinishedLine) {
  std::FILE* f = std::tmpfile();
  ASSERT_NE(f, nullptr);
  {
    Progress p("decode", 10, f, Progress::Mode::kAlways);
    p.advance();
  }
  std::string s = read_all(f);
  EXPECT_EQ(s.back(), '\n');
  std::fclose(f);
}

}  // namespace
}  // namespace ditkit
