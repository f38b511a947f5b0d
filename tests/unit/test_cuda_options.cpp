// The CUDA backend's typed fusion option (backend.h), which replaced an environment variable:
// the defaults are the measured set, none() turns everything off, parse() reads the name lists
// the fusion tests use and refuses an unknown name by name. No GPU needed; all checks exact.
#include <gtest/gtest.h>

#include <string>

#include "backend/backend.h"
#include "util/check.h"

namespace qwen {
namespace {

std::string flags(const CudaFusions& f) {
  std::string s;
  for (bool b : {f.norm, f.resid, f.glu, f.rope, f.qkv, f.gateup}) s += b ? '1' : '0';
  return s;
}

TEST(CudaFusions, DefaultsAreTheMeasuredSet) {
  // norm and glu off (each measured slower), the rest on.
  EXPECT_EQ(flags(CudaFusions{}), "010111");
  EXPECT_EQ(flags(CudaFusions::none()), "000000");
  EXPECT_TRUE(CudaOptions{}.exact);
}

TEST(CudaFusions, ParsesNameLists) {
  EXPECT_EQ(flags(CudaFusions::parse("0")), "000000");
  EXPECT_EQ(flags(CudaFusions::parse("")), "000000");
  EXPECT_EQ(flags(CudaFusions::parse("qkv")), "000010");
  EXPECT_EQ(flags(CudaFusions::parse("resid,rope,qkv,gateup")), flags(CudaFusions{}));
  EXPECT_EQ(flags(CudaFusions::parse("norm,resid,glu,rope,qkv,gateup")), "111111");
}

TEST(CudaFusions, RefusesUnknownNames) {
  for (const char* list : {"resid,bogus", "qkv,", "Rope"}) {
    try {
      CudaFusions::parse(list);
      ADD_FAILURE() << list << " was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("unknown CUDA fusion"), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace qwen
