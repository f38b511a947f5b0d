// qwen-diff's taps see the kernels that run (backend_cuda.cu "Taps"): a tiny qwen2 model
// (make_model: 256 wide, 2 layers, 4:2 heads of 64, n_ff 512, vocab 512, Q8_0) runs 6 tokens one
// per forward, so every matmul is a decode GEMV and all four fusions (resid, rope, qkv, gateup)
// run, on the CPU and on CUDA with the default fusions, through runtime/tap_trace.h, the code
// qwen-diff prints (F16 KV cache on both sides, exact arithmetic as qwen-diff uses).
// Metric: qwen-diff's verdict, first_divergence at its default NMSE 1e-5 (a tensor also diverges
// when missing, of another shape or non-finite). Expected:
//  - no fault: no divergence (the GEMV path agrees with the CPU to NMSE <= 1e-10 before the F16
//    cache and 1e-7 after it, test_fusion_parity's bounds), and the taps of the fused outputs
//    name the fused kernels (e.g. L00.Qcur written by "gemv_group[qkv]");
//  - CudaOptions::plant_fault = F (the test hook doubles token 0's row of F's first output after
//    each fused launch: NMSE 1 on that tensor): the first divergence is exactly that output in
//    layer 0, written by F's fused kernel; every tensor before it in forward order still agrees.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "gguf/gguf.h"
#include "ops_test_util.h"
#include "runtime/tap_trace.h"

namespace qwen::test {
namespace {

constexpr double kTol = 1e-5;  // qwen-diff's default --nmse
const std::vector<int32_t> kTokens = {17, 101, 3, 250, 77, 409};

TapTrace trace(Backend& be, const gguf::File& f) {
  return trace_forward(be, f, kTokens, /*step=*/true, GGMLType::F16);
}

std::unique_ptr<Backend> cuda_with_fault(const std::string& fault) {
  CudaOptions o;
  o.plant_fault = fault;
  return make_cuda_backend(0, o);
}

class TapFault : public testing::Test {
 protected:
  void SetUp() override {
    QWEN_REQUIRE_GPU();
    path_ = make_model("qwen2", GGMLType::Q8_0, "", "taps");
    ASSERT_FALSE(HasFailure()) << "no model to run";
    file_ = gguf::File::open(path_);
    ref_ = trace(*make_cpu_backend(0), *file_);
  }
  std::string path_;
  std::shared_ptr<gguf::File> file_;
  TapTrace ref_;
};

TEST_F(TapFault, NoFaultNoDivergenceAndFusedKernelsNamed) {
  const TapTrace got = trace(*make_cuda_backend(0), *file_);
  const TapTensor* first = first_divergence(ref_, got, kTol);
  EXPECT_EQ(first ? first->key : std::string("none"), "none") << "a divergence without a fault";
  EXPECT_EQ(got.tensors.size(), ref_.tensors.size());
  struct Want {
    const char* key;
    const char* kernel;
  };
  for (const Want& w : {Want{"L00.Qcur", "gemv_group[qkv]"}, Want{"L00.Vcur", "gemv_group[qkv]"},
                        Want{"L00.Kcur_rope", "rope_store[rope]"}, Want{"L00.attn_out", "gemv[resid]"},
                        Want{"L00.ffn_inp", "gemv[resid]"}, Want{"L00.ffn_gate", "gemv_swiglu[gateup]"},
                        Want{"L00.ffn_swiglu", "gemv_swiglu[gateup]"}, Want{"L01.l_out", "gemv[resid]"},
                        Want{"L00.attn_norm", "rmsnorm"}, Want{"L00.kqv_out", "attention"}}) {
    const TapTensor* t = got.find(w.key);
    ASSERT_NE(t, nullptr) << w.key;
    EXPECT_EQ(t->kernel, w.kernel) << w.key;
  }
}

TEST_F(TapFault, PlantedFaultIsTheFirstDivergence) {
  struct Case {
    const char* fusion;
    const char* first;   // the tensor qwen-diff must name
    const char* kernel;  // the fused kernel that wrote it
  };
  for (const Case& c :
       {Case{"qkv", "L00.Qcur", "gemv_group[qkv]"}, Case{"rope", "L00.Qcur_rope", "rope_store[rope]"},
        Case{"resid", "L00.ffn_inp", "gemv[resid]"},
        Case{"gateup", "L00.ffn_swiglu", "gemv_swiglu[gateup]"}}) {
    SCOPED_TRACE(c.fusion);
    const TapTrace got = trace(*cuda_with_fault(c.fusion), *file_);
    const TapTensor* first = first_divergence(ref_, got, kTol);
    ASSERT_NE(first, nullptr) << "the planted fault went unnoticed";
    EXPECT_EQ(first->key, c.first);
    const TapTensor* bad = got.find(first->key);
    ASSERT_NE(bad, nullptr);
    EXPECT_EQ(bad->kernel, c.kernel);
    EXPECT_GT(compare(*first, *bad).nmse, 0.1) << "token 0's row doubled in every forward";
  }
}

TEST_F(TapFault, HookRefusesWhatWouldNeverFire) {
  for (const char* fault : {"norm", "deep", "bogus"}) {
    try {
      cuda_with_fault(fault);
      ADD_FAILURE() << fault << " was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("plant_fault"), std::string::npos) << e.what();
    }
  }
  CudaOptions off;
  off.fusions = CudaFusions::parse("resid,rope");
  off.plant_fault = "qkv";
  EXPECT_THROW(make_cuda_backend(0, off), Error);
}

}  // namespace
}  // namespace qwen::test
