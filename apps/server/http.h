// The server's HTTP front: its own listening socket, accept loop and request reader in front of
// cpp-httplib, which then only routes complete, validated requests and writes the responses.
//
// Why a front (docs/SERVER.md, "HTTP layer"): cpp-httplib 0.11.4, the version Debian ships, reads
// each request on a pool thread with a timeout per read() but none for the whole request, lets a
// chunked body past the payload limit, takes any number of headers, answers framing errors only
// after its read timeout and binds with SO_REUSEPORT. Here one I/O thread reads every connection's
// request head and body with poll(), under these limits, and holds no worker thread while a client
// dawdles; a worker thread is taken only by a request that has fully arrived.
//
//   - request head (request line + headers) at most `max_head_bytes`, at most `max_headers` lines;
//   - body at most `max_body` bytes, Content-Length or chunked (the decoded size counts), told at
//     once: a Content-Length over the limit is refused before its body is read;
//   - one deadline for the whole request (head and body) from its first byte, and an idle
//     deadline between keep-alive requests;
//   - at most `max_connections` open connections (a new one beyond that gets 503 and is closed)
//     and at most `max_buffered` bytes of unfinished requests over all connections;
//   - framing errors (bad chunk size, conflicting or duplicate Content-Length, Content-Length with
//     Transfer-Encoding, a POST without a length) are answered as soon as they are read.
// Requests reach httplib rebuilt: body de-chunked with a single Content-Length, and without the
// headers this server does not implement (Range, If-Range: no reply is a byte range).
#pragma once

#include <httplib.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace qwen::server {

struct HttpLimits {
  size_t max_head_bytes = 32 << 10;
  size_t max_headers = 64;
  size_t max_body = 16u << 20;  // far beyond any prompt that fits a context
  size_t max_buffered = 256u << 20;
  std::chrono::milliseconds request_timeout{30000};  // whole request, from its first byte
  std::chrono::milliseconds idle_timeout{5000};      // keep-alive connection with no request
  std::chrono::milliseconds write_timeout{10000};    // a client that stops reading
  int max_connections = 512;
  int workers = 64;  // threads running handlers (each streaming or waiting request holds one)
};

class HttpServer : public httplib::Server {
 public:
  explicit HttpServer(HttpLimits limits);
  ~HttpServer() override;
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds host:port (0: a free port) with SO_REUSEADDR only, so a second server on a port in use
  // fails instead of sharing it. Returns the port. Throws qwen::Error naming the address.
  int bind_listen(const std::string& host, int port);
  // Serves until stop_serving(); returns once every connection is closed and every worker joined.
  void serve();
  // Stops accepting, closes idle connections, lets running handlers finish. Thread-safe.
  void stop_serving();
  bool stopping() const { return stopping_.load(); }

  // True when the client of the request the calling handler thread serves has closed its side of
  // the connection (a non-streaming generation is then cancelled). False outside a handler.
  static bool client_gone();

 private:
  struct Conn;
  struct Ready {
    std::unique_ptr<Conn> conn;
    std::string request;  // rebuilt request: head + body with Content-Length
  };
  // Why a request is refused before it reaches a handler (status 0: it is not).
  struct Refusal {
    int status = 0;
    std::string message, code;
  };
  void io_loop();
  void worker_loop();
  // Reads what arrived on c; c becomes null when the connection is closed or handed off.
  void on_readable(std::unique_ptr<Conn>& c);
  // Parses what c holds: a complete request goes to the workers (c becomes null), a bad one is
  // refused, an unfinished one waits for more bytes.
  void try_complete(std::unique_ptr<Conn>& c);
  // The head c->buf[0, head_end) into c's request state, or why it is refused.
  Refusal parse_head(Conn& c) const;
  // Decodes the chunked body bytes that arrived (consuming them from c->buf).
  Refusal decode_chunks(Conn& c) const;
  void refuse(Conn& c, int status, const std::string& message, const std::string& code);
  void close_conn(Conn& c);
  void wake();

  const HttpLimits lim_;
  int listen_fd_ = -1;
  int wake_fd_ = -1;
  std::atomic<bool> stopping_{false};
  std::atomic<int> open_conns_{0};
  size_t buffered_ = 0;  // io thread only

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Ready> ready_;                      // complete requests for the workers; guarded by mu_
  std::vector<std::unique_ptr<Conn>> returned_;  // keep-alive connections back from workers; mu_
  std::vector<std::thread> workers_;
};

}  // namespace qwen::server
