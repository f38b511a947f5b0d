// Continuous batching over the engine's KV cache slots. HTTP threads submit Jobs; one scheduler
// thread owns the Engine, gives each queued job a free slot as soon as one exists, and advances
// every running generation together with one Engine::step (one batched forward) per iteration. A
// job joins between steps and leaves the moment it finishes, so no request waits for another's
// end. Text flows back through the Job, which the HTTP thread drains at its own pace: a slow or
// vanished client never blocks the step loop.
//
// Chunked prefill: each step feeds at most `prefill_chunk` prompt tokens in all, in the same
// batched forward as the decode tokens of the running generations (Engine::step's prompt budget),
// so a long prompt delays each of their tokens by one chunk's compute at most instead of by the
// whole prompt, and a short prompt goes before the rest of a long one.
//
// An embedding job is evaluated at once when admitted (Engine::embed drains the step in flight and
// runs the whole input), on a free slot like a generation, which then holds its tokens.
//
// Prefix reuse stays within a job's cache scope (the API key and `user` of its request, see
// Routes): a slot remembers the scope of its last job, and a job of another scope gets a slot
// whose contents are forgotten first. Otherwise one client could learn another's prompt from how
// many of its guessed tokens were cached (usage.prompt_tokens_details.cached_tokens, /metrics,
// or the time to the first token).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "metrics.h"
#include "model/config.h"
#include "runtime/session.h"

namespace qwen::server {

// How a job ended, for the response's finish_reason and usage.
struct JobResult {
  FinishReason finish = FinishReason::Running;
  int prompt_tokens = 0;                  // every prompt token, cached or not (OpenAI usage counts them all)
  int completion_tokens = 0;              // tokens sampled, a final end-of-generation token included
  int cached_tokens = 0;                  // prompt tokens reused from the slot's KV cache (not evaluated)
  std::vector<TokenLogprobs> logprobs{};  // one per sampled token when the job asked for them
  std::string error{};                    // set when the job failed; `finish` is then meaningless
  bool shutting_down = false;             // the failure is the server stopping (503), not the engine (500)
  std::vector<float> embedding{};         // an embedding job's pooled vector (not normalised)
};

// One generation request and the channel its text comes back through. Shared by the HTTP thread
// (which reads and may cancel) and the scheduler thread (which writes).
class Job {
 public:
  // `scope`: who may reuse this job's cached prompt (see above). With `embed`, the job is the
  // embedding of its prompt with that pooling (Engine::embed), not a generation.
  Job(std::vector<int32_t> prompt, GenerateParams params, std::string scope,
      std::optional<Pooling> embed = std::nullopt);

  const std::vector<int32_t>& prompt() const { return prompt_; }
  const GenerateParams& params() const { return params_; }
  const std::string& scope() const { return scope_; }
  const std::optional<Pooling>& embed() const { return embed_; }

  // ---- HTTP side ----
  struct Update {
    std::string text;   // text produced since the previous wait()
    bool done = false;  // the job has ended; `result` is final and no more text follows
    JobResult result;
  };
  // Waits until new text arrives, the job ends, or `timeout` passes (then returns nothing new).
  Update wait(std::chrono::milliseconds timeout);
  // Asks the scheduler to stop this job and free its slot (idempotent; safe after the end).
  void cancel() { cancelled_.store(true); }
  bool cancelled() const { return cancelled_.load(); }

  // ---- scheduler side ----
  bool on_text(std::string_view piece);  // returns false once cancelled, which stops the generation
  void finish(JobResult result);

 private:
  const std::vector<int32_t> prompt_;
  const GenerateParams params_;
  const std::string scope_;
  const std::optional<Pooling> embed_;
  std::atomic<bool> cancelled_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  std::string pending_;  // produced, not yet taken by wait()
  bool done_ = false;
  JobResult result_;
};

class Scheduler {
 public:
  // Starts the scheduler thread. The engine must outlive the scheduler and is used by no one
  // else while it runs (its tokenizer excepted: see Routes). prefill_chunk >= 1: the prompt
  // tokens one step feeds, all jobs together.
  Scheduler(Engine& engine, Metrics& metrics, int prefill_chunk);
  ~Scheduler();  // shutdown()
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Stops the thread after its current step; every job queued, running or submitted later ends
  // at once with shutting_down set. Idempotent.
  void shutdown();
  void submit(std::shared_ptr<Job> job);
  int n_slots() const { return n_slots_; }
  bool stopping() const { return stopping_.load(); }

 private:
  struct Running {
    std::shared_ptr<Job> job;
    std::unique_ptr<Generation> gen;
  };

  void run();
  void admit(std::vector<std::shared_ptr<Job>>& admitted);
  void start(std::shared_ptr<Job> job, int slot);  // creates the Generation
  void embed(Job& job, int slot);                  // runs an embedding job to its end
  // A free slot for the job, preferring the longest cached prefix of its own scope; a slot of
  // another scope is cleared.
  int pick_slot(const Job& job);
  void retire(Running& r);
  void fail_running(const JobResult& failure);  // ends every running job

  Engine& engine_;
  Metrics& metrics_;
  const int n_slots_;
  const int prefill_chunk_;
  // Scheduler thread only. A slot is busy while a running job holds it.
  std::vector<Running> running_;
  std::vector<std::string> slot_scope_;  // scope of each slot's cached tokens

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Job>> queue_;  // guarded by mu_
  bool stop_ = false;                       // guarded by mu_
  std::atomic<bool> stopping_{false};       // stop_, readable without the lock (/health)
  std::thread thread_;
};

}  // namespace qwen::server
