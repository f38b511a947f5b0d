// Server counters, updated from HTTP threads and the scheduler thread, rendered as Prometheus text
// exposition (GET /metrics). Counters only grow; gauges are sampled at render time.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

namespace qwen::server {

struct Metrics {
  std::atomic<uint64_t> requests{0};          // HTTP requests on every route
  std::atomic<uint64_t> errors{0};            // responses with status >= 400
  std::atomic<uint64_t> completions{0};       // generations that finished (stop / length)
  std::atomic<uint64_t> cancelled{0};         // generations dropped because the client went away
  std::atomic<uint64_t> prompt_tokens{0};     // prompt tokens evaluated (cached prefixes excluded)
  std::atomic<uint64_t> cached_tokens{0};     // prompt tokens reused from a slot's KV cache
  std::atomic<uint64_t> generated_tokens{0};  // tokens sampled
  std::atomic<uint64_t> prompt_us{0};         // prefill wall time summed over generations
  std::atomic<uint64_t> generation_us{0};     // scheduler time spent in batched steps
  std::atomic<uint64_t> decode_bytes{0};      // bytes those steps read and wrote (Model::decode_bytes)
  std::atomic<int> active{0};                 // generations holding a slot
  std::atomic<int> queued{0};                 // generations waiting for a slot

  // Prometheus text format 0.0.4; `n_slots` is reported as a gauge.
  std::string render(int n_slots) const;
};

}  // namespace qwen::server
