// The CUDA backend's typed fusion option (backend.h), which replaced an environment variable:
// the defaults are the measured set, none() turns everything off, parse() reads the name lists
// the fusion tests use and refuses an unknown name by name, including the deleted fusions norm
// and glu (they measured slower). No GPU needed; all checks exact.
#include <gtest/gtest.h>

#include <string>

#include "backend/backend.h"
#include "util/check.h"

namespace qwen {
namespace {

std::string flags(const CudaFusions& f) {
  std::string s;
  for (bool b : {f.resid, f.rope, f.qkv, f.gateup, f.deep, f.rows}) s += b ? '1' : '0';
  return s;
}

TEST(CudaFusions, DefaultsAreTheMeasuredSet) {
  EXPECT_EQ(flags(CudaFusions{}), "111111");
  EXPECT_EQ(flags(CudaFusions::none()), "000000");
  EXPECT_TRUE(CudaOptions{}.exact);
  EXPECT_EQ(CudaOptions{}.plant_fault, "");  // the test hook is off unless a test sets it
}

TEST(CudaFusions, ParsesNameLists) {
  EXPECT_EQ(flags(CudaFusions::parse("0")), "000000");
  EXPECT_EQ(flags(CudaFusions::parse("")), "000000");
  EXPECT_EQ(flags(CudaFusions::parse("qkv")), "001000");
  EXPECT_EQ(flags(CudaFusions::parse("rope,gateup")), "010100");
  EXPECT_EQ(flags(CudaFusions::parse("resid,rope,qkv,gateup,deep,rows")), flags(CudaFusions{}));
}

TEST(CudaFusions, RefusesUnknownNames) {
  for (const char* list : {"resid,bogus", "qkv,", "Rope", "norm", "resid,glu"}) {
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
