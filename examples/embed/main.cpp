// Uses qwen.cu as a library through its public header only:
//   qwen-embed-example MODEL.gguf [PROMPT] [MAX_TOKENS]
// Loads the model, prints the prompt's token ids and their round trip, then streams a greedy
// completion to stdout and a one-line summary to stderr.
#include <qwen/qwen.h>

#include <charconv>
#include <cstdio>
#include <exception>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

int main(int argc, char** argv) {
  if (argc < 2 || argc > 4) {
    std::fprintf(stderr, "usage: %s MODEL.gguf [PROMPT] [MAX_TOKENS]\n", argv[0]);
    return 2;
  }
  int max_tokens = 16;
  if (argc > 3) {
    const std::string_view s = argv[3];
    const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), max_tokens);
    if (ec != std::errc() || end != s.data() + s.size()) {
      std::fprintf(stderr, "error: MAX_TOKENS '%s' is not an integer\n", argv[3]);
      return 2;
    }
  }
  try {
    qwen::api::LoadOptions load;
    load.model_path = argv[1];
    load.device = "cpu";
    const std::unique_ptr<qwen::api::Model> model = qwen::api::Model::load(load);

    const std::string prompt = argc > 2 ? argv[2] : "The capital of France is";
    const std::vector<int32_t> ids = model->tokenize(prompt);
    std::printf("tokens:");
    for (const int32_t id : ids) std::printf(" %d", id);
    std::printf("\nround trip: %s\n", model->detokenize(ids) == prompt ? "ok" : "DIFFERENT");

    qwen::api::GenerateOptions gen;
    gen.max_tokens = max_tokens;
    gen.sampling.temperature = 0.f;  // greedy: the same text every run
    const qwen::api::Result r = model->generate(ids, gen, [](std::string_view piece) {
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::fflush(stdout);
      return true;
    });
    std::printf("\n");
    std::fprintf(stderr, "%zu tokens, finish: %s, %.1f tok/s on %s\n", r.tokens.size(),
                 r.finish_reason.c_str(), r.gen_tokens_per_s, model->backend_name().c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
