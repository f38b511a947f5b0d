#include "http.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>

#include "api.h"
#include "responses.h"
#include "util/check.h"

namespace qwen::server {

using Clock = std::chrono::steady_clock;

namespace {

// The connection of the request a handler thread is serving (client_gone()).
thread_local int tls_conn_fd = -1;

constexpr size_t kReadChunk = 64 << 10;
constexpr size_t kMaxChunkLine = 1024;              // chunk size + extensions
constexpr std::chrono::milliseconds kLinger{1000};  // draining a refused client before closing

const char* reason_phrase(int status) {
  switch (status) {
    case 400:
      return "Bad Request";
    case 408:
      return "Request Timeout";
    case 411:
      return "Length Required";
    case 413:
      return "Payload Too Large";
    case 417:
      return "Expectation Failed";
    case 431:
      return "Request Header Fields Too Large";
    case 501:
      return "Not Implemented";
    case 503:
      return "Service Unavailable";
    case 505:
      return "HTTP Version Not Supported";
  }
  return "Error";
}

// A complete response that closes the connection, in the OpenAI error shape.
std::string error_response(int status, const std::string& message, const std::string& code) {
  const ApiError e(status, message, code, {}, status >= 500 ? "server_error" : "invalid_request_error");
  const std::string body = to_wire(e.to_json());
  return str("HTTP/1.1 ", status, " ", reason_phrase(status), "\r\nContent-Type: application/json\r\n",
             "Content-Length: ", body.size(), "\r\nConnection: close\r\n\r\n", body);
}

std::string lower(std::string s) {
  for (char& ch : s) ch = char(std::tolower(static_cast<unsigned char>(ch)));
  return s;
}

bool is_token_char(char ch) {
  const auto u = static_cast<unsigned char>(ch);
  return std::isalnum(u) || std::strchr("!#$%&'*+-.^_`|~", ch) != nullptr;
}

std::string trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return std::string(s);
}

// A value for an error message: printable ASCII only, at most 40 bytes.
std::string shown(std::string_view s) {
  std::string out;
  for (char ch : s.substr(0, 40)) out += (ch >= 0x20 && ch < 0x7f) ? ch : '?';
  return s.size() > 40 ? out + "..." : out;
}

// Sends all of `data` on a non-blocking socket, waiting for room at most `timeout` in total.
bool send_all(int fd, const char* data, size_t n, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (n > 0) {
    const ssize_t w = ::send(fd, data, n, MSG_NOSIGNAL);
    if (w > 0) {
      data += w;
      n -= size_t(w);
      continue;
    }
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) return false;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) return false;
    pollfd p{fd, POLLOUT, 0};
    if (::poll(&p, 1, int(left.count())) <= 0 || (p.revents & (POLLERR | POLLHUP))) return false;
  }
  return true;
}

void address_of(int fd, bool peer, std::string& ip, int& port) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  const int rc = peer ? getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len)
                      : getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  if (rc != 0) return;
  char buf[INET6_ADDRSTRLEN] = {};
  if (ss.ss_family == AF_INET) {
    const auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
    inet_ntop(AF_INET, &a->sin_addr, buf, sizeof(buf));
    port = ntohs(a->sin_port);
  } else if (ss.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
    inet_ntop(AF_INET6, &a->sin6_addr, buf, sizeof(buf));
    port = ntohs(a->sin6_port);
  }
  ip = buf;
}

// What httplib reads a request from: the rebuilt request in memory. Responses go to the socket.
class RequestStream : public httplib::Stream {
 public:
  RequestStream(const std::string& request, int fd, std::chrono::milliseconds write_timeout)
      : in_(request), fd_(fd), write_timeout_(write_timeout) {}
  bool is_readable() const override { return pos_ < in_.size(); }
  bool is_writable() const override {
    pollfd p{fd_, POLLOUT, 0};
    return ::poll(&p, 1, int(write_timeout_.count())) > 0 && !(p.revents & (POLLERR | POLLHUP));
  }
  ssize_t read(char* ptr, size_t size) override {
    const size_t n = std::min(size, in_.size() - pos_);
    std::memcpy(ptr, in_.data() + pos_, n);
    pos_ += n;
    return ssize_t(n);
  }
  ssize_t write(const char* ptr, size_t size) override {
    return send_all(fd_, ptr, size, write_timeout_) ? ssize_t(size) : -1;
  }
  void get_remote_ip_and_port(std::string& ip, int& port) const override { address_of(fd_, true, ip, port); }
  void get_local_ip_and_port(std::string& ip, int& port) const override { address_of(fd_, false, ip, port); }
  socket_t socket() const override { return fd_; }

 private:
  const std::string& in_;
  size_t pos_ = 0;
  int fd_;
  std::chrono::milliseconds write_timeout_;
};

}  // namespace

// One client connection and the parse state of its current request (io thread only, except
// while a worker serves a complete request on it).
struct HttpServer::Conn {
  enum class Chunk { kSize, kData, kDataEnd, kTrailer, kDone };
  int fd = -1;
  std::string buf;  // bytes read and not consumed: head, raw body so far, pipelined bytes
  Clock::time_point deadline;
  bool started = false;  // a byte of the current request has arrived (request deadline runs)
  bool closing = false;  // refused: an error was sent, the rest is drained until EOF or deadline
  size_t counted = 0;    // bytes this connection adds to buffered_
  // Current request, once its head is parsed (head_end > 0).
  size_t head_end = 0;
  std::string head_out;  // request line and the headers passed on
  bool chunked = false;
  size_t content_length = 0;
  bool expect_continue = false;
  bool continue_sent = false;
  Chunk chunk = Chunk::kSize;
  size_t chunk_left = 0;
  size_t trailer_lines = 0;
  std::string body;  // de-chunked body so far

  size_t footprint() const { return buf.size() + body.size(); }
  void reset_request() {
    head_end = 0;
    head_out.clear();
    chunked = expect_continue = continue_sent = false;
    content_length = 0;
    chunk = Chunk::kSize;
    chunk_left = trailer_lines = 0;
    body.clear();
  }
};

HttpServer::HttpServer(HttpLimits limits) : lim_(limits) {
  QWEN_CHECK(lim_.workers >= 1 && lim_.max_connections >= 1, "HTTP limits: workers and connections >= 1");
  wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  QWEN_CHECK(wake_fd_ >= 0, "eventfd: ", std::strerror(errno));
  set_payload_max_length(lim_.max_body);
}

HttpServer::~HttpServer() {
  if (listen_fd_ >= 0) ::close(listen_fd_);
  ::close(wake_fd_);
}

int HttpServer::bind_listen(const std::string& host, int port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  const std::string service = std::to_string(port);
  if (const int rc = getaddrinfo(host.c_str(), service.c_str(), &hints, &res); rc != 0) {
    throw Error(str("--host ", host, ": ", gai_strerror(rc)));
  }
  std::string why = "no address";
  for (addrinfo* a = res; a != nullptr && listen_fd_ < 0; a = a->ai_next) {
    const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    // SO_REUSEADDR lets a restarted server bind over connections in TIME_WAIT; SO_REUSEPORT is
    // left off on purpose: with it a second process could bind the same port and take a share of
    // this server's connections.
    const int yes = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    if (::bind(fd, a->ai_addr, a->ai_addrlen) == 0 && ::listen(fd, 128) == 0) {
      listen_fd_ = fd;
    } else {
      why = std::strerror(errno);
      ::close(fd);
    }
  }
  freeaddrinfo(res);
  if (listen_fd_ < 0) throw Error(str("cannot listen on ", host, ":", port, ": ", why));
  std::string ip;
  int bound = port;
  address_of(listen_fd_, false, ip, bound);
  // httplib's chunked writer stops a stream once this is INVALID_SOCKET (see stop_serving()).
  svr_sock_ = listen_fd_;
  return bound;
}

void HttpServer::wake() {
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t n = ::write(wake_fd_, &one, sizeof(one));
}

void HttpServer::stop_serving() {
  stopping_ = true;
  wake();
}

bool HttpServer::client_gone() {
  if (tls_conn_fd < 0) return false;
  pollfd p{tls_conn_fd, POLLIN | POLLRDHUP, 0};
  if (::poll(&p, 1, 0) <= 0) return false;
  if (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) return true;
  char c;
  return ::recv(tls_conn_fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) == 0;  // orderly shutdown
}

void HttpServer::serve() {
  QWEN_CHECK(listen_fd_ >= 0, "serve() before bind_listen()");
  for (int i = 0; i < lim_.workers; ++i) workers_.emplace_back([this] { worker_loop(); });
  io_loop();
  {
    std::lock_guard lk(mu_);
    ready_.emplace_back();  // an empty Ready tells the workers to exit once the queue before it is done
  }
  cv_.notify_all();
  for (std::thread& t : workers_) t.join();
  workers_.clear();
  for (auto& c : returned_) close_conn(*c);
  returned_.clear();
}

void HttpServer::worker_loop() {
  for (;;) {
    Ready r;
    {
      std::unique_lock lk(mu_);
      cv_.wait(lk, [&] { return !ready_.empty(); });
      if (!ready_.front().conn) return;  // the exit marker stays for the other workers
      r = std::move(ready_.front());
      ready_.pop_front();
    }
    RequestStream strm(r.request, r.conn->fd, lim_.write_timeout);
    bool closed = false;
    tls_conn_fd = r.conn->fd;
    process_request(strm, /*close_connection=*/stopping_.load(), closed, [](httplib::Request&) {});
    tls_conn_fd = -1;
    std::lock_guard lk(mu_);
    if (closed || stopping_.load()) {
      close_conn(*r.conn);
    } else {
      returned_.push_back(std::move(r.conn));
      wake();
    }
  }
}

void HttpServer::close_conn(Conn& c) {
  if (c.fd < 0) return;
  ::close(c.fd);
  c.fd = -1;
  open_conns_--;
}

void HttpServer::refuse(Conn& c, int status, const std::string& message, const std::string& code) {
  const std::string resp = error_response(status, message, code);
  // Best effort: the reply is small and the socket's send buffer empty at this point.
  [[maybe_unused]] ssize_t n = ::send(c.fd, resp.data(), resp.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  // Closing with unread input would reset the connection and could destroy the reply before the
  // client reads it: shut the write side and drain for a moment instead.
  ::shutdown(c.fd, SHUT_WR);
  c.closing = true;
  c.deadline = Clock::now() + kLinger;
  buffered_ -= c.counted;
  c.counted = 0;
  c.buf.clear();
  c.buf.shrink_to_fit();
  c.reset_request();
  c.body.shrink_to_fit();
}

void HttpServer::io_loop() {
  std::vector<std::unique_ptr<Conn>> conns;
  std::vector<pollfd> fds;
  for (;;) {
    const auto now = Clock::now();
    std::vector<std::unique_ptr<Conn>> back;
    {
      std::lock_guard lk(mu_);
      back.swap(returned_);
    }
    for (auto& c : back) {
      c->started = !c->buf.empty();  // pipelined bytes already start the next request
      c->deadline = now + (c->started ? lim_.request_timeout : lim_.idle_timeout);
      conns.push_back(std::move(c));
      // A request pipelined behind the one just answered may be complete already.
      if (conns.back()->started) try_complete(conns.back());
    }
    std::erase(conns, nullptr);
    if (stopping_.load()) {
      if (listen_fd_ >= 0) {
        svr_sock_ = INVALID_SOCKET;  // running streams end at their next chunk
        ::close(listen_fd_);
        listen_fd_ = -1;
      }
      // Unfinished requests are dropped; a worker closes the connection it serves when done.
      for (auto& c : conns) close_conn(*c);
      conns.clear();
      return;
    }

    fds.assign({{wake_fd_, POLLIN, 0}, {listen_fd_, POLLIN, 0}});
    auto next = Clock::time_point::max();
    for (auto& c : conns) {
      fds.push_back({c->fd, POLLIN, 0});
      next = std::min(next, c->deadline);
    }
    int timeout_ms = -1;
    if (next != Clock::time_point::max()) {
      timeout_ms = int(std::max<int64_t>(
          0, std::chrono::duration_cast<std::chrono::milliseconds>(next - now).count() + 1));
    }
    if (::poll(fds.data(), fds.size(), timeout_ms) < 0 && errno != EINTR) {
      throw Error(str("poll: ", std::strerror(errno)));
    }
    if (fds[0].revents & POLLIN) {
      uint64_t v;
      [[maybe_unused]] ssize_t n = ::read(wake_fd_, &v, sizeof(v));
    }
    for (size_t i = 0; i < conns.size(); ++i) {
      if (fds[2 + i].revents != 0) on_readable(conns[i]);
    }
    const auto after = Clock::now();
    for (auto& c : conns) {
      if (!c || c->deadline > after) continue;
      if (c->started && !c->closing) {
        refuse(*c, 408, str("the request did not arrive within ", lim_.request_timeout.count(), " ms"),
               "request_timeout");
      } else {
        close_conn(*c);
        buffered_ -= c->counted;
        c = nullptr;
      }
    }
    std::erase(conns, nullptr);
    if (fds[1].revents & POLLIN) {
      for (;;) {
        const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) break;
        if (open_conns_.load() >= lim_.max_connections) {
          const std::string resp = error_response(
              503, str("the server has ", lim_.max_connections, " open connections, its limit; retry later"),
              "too_many_connections");
          [[maybe_unused]] ssize_t n = ::send(fd, resp.data(), resp.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
          ::close(fd);
          continue;
        }
        const int yes = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &yes, sizeof(yes));  // tokens leave as they are made
        open_conns_++;
        auto c = std::make_unique<Conn>();
        c->fd = fd;
        c->deadline = Clock::now() + lim_.idle_timeout;
        conns.push_back(std::move(c));
      }
    }
  }
}

void HttpServer::on_readable(std::unique_ptr<Conn>& c) {
  char tmp[kReadChunk];
  const ssize_t n = ::recv(c->fd, tmp, sizeof(tmp), 0);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
  if (n <= 0) {  // the client closed (an unfinished request is dropped) or the connection failed
    buffered_ -= c->counted;
    close_conn(*c);
    c = nullptr;
    return;
  }
  if (c->closing) return;  // draining after a refusal
  if (!c->started) {
    c->started = true;
    c->deadline = Clock::now() + lim_.request_timeout;
  }
  if (buffered_ + size_t(n) > lim_.max_buffered) {
    refuse(*c, 503, "the server holds too many unfinished requests; retry later", "server_busy");
    return;
  }
  c->buf.append(tmp, size_t(n));
  try_complete(c);
}

void HttpServer::try_complete(std::unique_ptr<Conn>& c) {
  Conn& k = *c;
  auto fail = [&](int status, const std::string& message, const std::string& code) {
    refuse(k, status, message, code);
  };
  auto account = [&] {
    const size_t now = k.footprint();
    buffered_ = buffered_ - k.counted + now;
    k.counted = now;
  };
  if (k.head_end == 0) {
    // Empty lines before a request line are allowed (RFC 9112 §2.2).
    size_t skip = 0;
    while (skip + 1 < k.buf.size() && k.buf[skip] == '\r' && k.buf[skip + 1] == '\n') skip += 2;
    k.buf.erase(0, skip);
    const size_t end = k.buf.find("\r\n\r\n");
    const size_t head_len = end == std::string::npos ? k.buf.size() : end + 4;
    if (head_len > lim_.max_head_bytes) {
      return fail(431, str("the request head is over ", lim_.max_head_bytes, " bytes"), "header_too_large");
    }
    // Count header lines as they come, so 300,000 tiny headers are refused at the limit.
    const size_t lines = size_t(std::count(k.buf.begin(), k.buf.begin() + ptrdiff_t(head_len), '\n'));
    if (lines > lim_.max_headers + 2) {
      return fail(431, str("the request has more than ", lim_.max_headers, " headers"), "too_many_headers");
    }
    if (end == std::string::npos) return account();
    k.head_end = end + 4;
    Refusal err = parse_head(k);
    if (err.status != 0) return fail(err.status, err.message, err.code);
  }
  // Body.
  if (!k.chunked) {
    if (k.buf.size() - k.head_end < k.content_length) {
      if (k.expect_continue && !k.continue_sent) {
        k.continue_sent = true;
        const char kContinue[] = "HTTP/1.1 100 Continue\r\n\r\n";
        [[maybe_unused]] ssize_t n =
            ::send(k.fd, kContinue, sizeof(kContinue) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
      }
      return account();
    }
    k.body = k.buf.substr(k.head_end, k.content_length);
    k.buf.erase(0, k.head_end + k.content_length);
  } else {
    Refusal err = decode_chunks(k);
    if (err.status != 0) return fail(err.status, err.message, err.code);
    if (k.chunk != Conn::Chunk::kDone) return account();
    k.buf.erase(0, k.head_end);
  }
  // Complete: hand it to a worker, with whatever follows it (pipelined bytes) left in buf.
  Ready r;
  r.request = str(k.head_out, "Content-Length: ", k.body.size(), "\r\n\r\n", k.body);
  k.reset_request();
  k.body.shrink_to_fit();
  buffered_ -= k.counted;
  k.counted = 0;
  k.started = false;
  r.conn = std::move(c);
  {
    std::lock_guard lk(mu_);
    ready_.push_back(std::move(r));
  }
  cv_.notify_one();
}

HttpServer::Refusal HttpServer::parse_head(Conn& k) const {
  std::vector<std::string_view> lines;
  const std::string_view head(k.buf.data(), k.head_end - 4);
  for (size_t at = 0;;) {
    const size_t eol = head.find("\r\n", at);
    lines.push_back(head.substr(at, eol == std::string_view::npos ? std::string_view::npos : eol - at));
    if (eol == std::string_view::npos) break;
    at = eol + 2;
  }
  for (std::string_view line : lines) {
    if (line.find_first_of(std::string_view("\r\n\0", 3)) != std::string_view::npos) {
      return {400, "the request head has a bare CR or LF, or a NUL byte", "bad_request"};
    }
  }
  // Request line: METHOD SP TARGET SP HTTP/1.x
  const std::string_view rl = lines[0];
  const size_t sp1 = rl.find(' '), sp2 = rl.rfind(' ');
  if (sp1 == std::string_view::npos || sp1 == 0 || sp2 == sp1 || sp2 + 1 == rl.size() ||
      rl.substr(sp1 + 1, sp2 - sp1 - 1).find(' ') != std::string_view::npos) {
    return {400, str("malformed request line '", shown(rl), "'"), "bad_request"};
  }
  const std::string_view method = rl.substr(0, sp1), version = rl.substr(sp2 + 1);
  if (!std::all_of(method.begin(), method.end(), is_token_char)) {
    return {400, str("malformed method '", shown(method), "'"), "bad_request"};
  }
  if (version != "HTTP/1.1" && version != "HTTP/1.0") {
    return {version.starts_with("HTTP/") ? 505 : 400, str("unsupported protocol '", shown(version), "'"),
            "bad_request"};
  }
  k.head_out = str(rl, "\r\n");
  bool has_length = false;
  for (size_t i = 1; i < lines.size(); ++i) {
    const std::string_view line = lines[i];
    if (line.empty() || line[0] == ' ' || line[0] == '\t') {
      return {400, "obsolete header line folding is not accepted", "bad_request"};
    }
    const size_t colon = line.find(':');
    const std::string_view name = line.substr(0, colon);
    if (colon == std::string_view::npos || colon == 0 ||
        !std::all_of(name.begin(), name.end(), is_token_char)) {
      return {400, str("malformed header line '", shown(line), "'"), "bad_request"};
    }
    const std::string key = lower(std::string(name));
    const std::string value = trim(line.substr(colon + 1));
    if (key == "content-length") {
      // Two lengths (even equal ones) are how requests get smuggled past a proxy: refused.
      if (has_length) return {400, "more than one Content-Length header", "bad_request"};
      has_length = true;
      if (value.empty() || value.size() > 18 || !std::all_of(value.begin(), value.end(), ::isdigit)) {
        return {400, str("Content-Length '", shown(value), "' is not a byte count"), "bad_request"};
      }
      k.content_length = std::stoull(value);
      if (k.content_length > lim_.max_body) {
        return {413, str("Content-Length ", value, " is over the limit of ", lim_.max_body, " bytes"),
                "payload_too_large"};
      }
    } else if (key == "transfer-encoding") {
      if (k.chunked) return {400, "more than one Transfer-Encoding header", "bad_request"};
      if (lower(value) != "chunked") {
        return {501, str("Transfer-Encoding '", shown(value), "' is not supported (only 'chunked')"),
                "not_implemented"};
      }
      k.chunked = true;
    } else if (key == "expect") {
      if (lower(value) != "100-continue") {
        return {417, str("Expect '", shown(value), "' is not supported"), "expectation_failed"};
      }
      k.expect_continue = true;
    } else if (key != "range" && key != "if-range") {  // no reply is a byte range
      k.head_out += str(line, "\r\n");
    }
  }
  if (has_length && k.chunked) {
    return {400, "a request with both Content-Length and Transfer-Encoding is ambiguous", "bad_request"};
  }
  if (!has_length && !k.chunked && (method == "POST" || method == "PUT" || method == "PATCH")) {
    return {411, str("a ", method, " request needs a Content-Length header or a chunked body"),
            "length_required"};
  }
  return {};
}

HttpServer::Refusal HttpServer::decode_chunks(Conn& k) const {
  using Chunk = Conn::Chunk;
  size_t pos = k.head_end;
  Refusal r;
  while (k.chunk != Chunk::kDone && r.status == 0) {
    if (k.chunk == Chunk::kSize || k.chunk == Chunk::kTrailer) {
      const size_t eol = k.buf.find("\r\n", pos);
      if (eol == std::string::npos) {
        const size_t longest = k.chunk == Chunk::kSize ? kMaxChunkLine : lim_.max_head_bytes;
        if (k.buf.size() - pos > longest)
          r = {400, str("a chunk line is over ", longest, " bytes"), "bad_chunk"};
        break;
      }
      const std::string_view line(k.buf.data() + pos, eol - pos);
      pos = eol + 2;
      if (k.chunk == Chunk::kTrailer) {  // trailer fields are read and dropped
        if (line.empty()) {
          k.chunk = Chunk::kDone;
        } else if (++k.trailer_lines > lim_.max_headers) {
          r = {431, str("the chunked body has more than ", lim_.max_headers, " trailer lines"),
               "too_many_headers"};
        }
        continue;
      }
      size_t digits = 0;
      uint64_t size = 0;
      while (digits < line.size() && digits < 16 && std::isxdigit(static_cast<unsigned char>(line[digits]))) {
        const char ch = char(std::tolower(static_cast<unsigned char>(line[digits++])));
        size = size * 16 + uint64_t(ch <= '9' ? ch - '0' : ch - 'a' + 10);
      }
      const char after = digits < line.size() ? line[digits] : ';';
      if (digits == 0 || (after != ';' && after != ' ' && after != '\t')) {
        r = {400, str("bad chunk size line '", shown(line), "'"), "bad_chunk"};
      } else if (size > lim_.max_body - k.body.size()) {
        r = {413, str("the chunked body is over the limit of ", lim_.max_body, " bytes"),
             "payload_too_large"};
      } else {
        k.chunk = size == 0 ? Chunk::kTrailer : Chunk::kData;
        k.chunk_left = size_t(size);
      }
    } else if (k.chunk == Chunk::kData) {
      const size_t n = std::min(k.chunk_left, k.buf.size() - pos);
      if (n == 0) break;
      k.body.append(k.buf, pos, n);
      pos += n;
      k.chunk_left -= n;
      if (k.chunk_left == 0) k.chunk = Chunk::kDataEnd;
    } else {  // the CRLF after a chunk's data
      if (k.buf.size() - pos < 2) break;
      if (k.buf.compare(pos, 2, "\r\n") != 0) r = {400, "chunk data is not followed by CRLF", "bad_chunk"};
      pos += 2;
      k.chunk = Chunk::kSize;
    }
  }
  k.buf.erase(k.head_end, pos - k.head_end);
  return r;
}

}  // namespace qwen::server
