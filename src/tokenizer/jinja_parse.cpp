// Jinja lexer and parser: template text to the tree of jinja_ast.h. Whitespace control follows
// jinja2 with transformers' settings: trim_blocks (the newline after a block or comment tag is
// dropped), lstrip_blocks (spaces and tabs from the start of a line up to a block or comment tag
// are dropped), '-' on a tag strips all whitespace on that side, '+' turns the two settings off;
// newlines are normalised to \n and one trailing newline is dropped (keep_trailing_newline=False).
#include <cstring>

#include "tokenizer/jinja_ast.h"
#include "tokenizer/unicode.h"
#include "util/check.h"

namespace qwen::jinja {

void fail_line(int line, const std::string& message) {
  throw Error(str("chat template line ", line, ": ", message));
}

namespace {

struct Tok {
  enum Type { kText, kVarBegin, kVarEnd, kBlockBegin, kBlockEnd, kName, kString, kInt, kFloat, kOp, kEof };
  Type type;
  std::string s;  // text, name, string value or operator
  Value num;
  int line;
};

const char* kOps[] = {"//", "**", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "~", "<",
                      ">",  "=",  "(",  ")",  "[",  "]",  "{", "}", ".", ",", ":", "|"};

class Lexer {
 public:
  explicit Lexer(std::string_view source) {
    // Newline normalisation and the dropped trailing newline, as jinja2's lexer does.
    for (size_t i = 0; i < source.size(); ++i) {
      if (source[i] == '\r') {
        src_ += '\n';
        if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
      } else {
        src_ += source[i];
      }
    }
    if (!src_.empty() && src_.back() == '\n') src_.pop_back();
  }

  std::vector<Tok> run() {
    size_t pos = 0;
    while (pos < src_.size()) {
      size_t open = src_.find('{', pos);
      while (open != std::string::npos && open + 1 < src_.size() && !std::strchr("{%#", src_[open + 1])) {
        open = src_.find('{', open + 1);
      }
      if (open == std::string::npos || open + 1 >= src_.size()) open = src_.size();
      std::string text = src_.substr(pos, open - pos);
      apply_pending(text);
      if (open == src_.size()) {
        emit_text(std::move(text), pos);
        break;
      }
      const char kind = src_[open + 1];
      const char mod = open + 2 < src_.size() ? src_[open + 2] : '\0';
      if (mod == '-') {
        text = py_strip(text, nullptr, false, true);
      } else if (mod != '+' && kind != '{') {
        // lstrip_blocks: only when the tag is preceded on its line by spaces and tabs alone.
        size_t ws = open;
        while (ws > pos && (src_[ws - 1] == ' ' || src_[ws - 1] == '\t')) --ws;
        if (ws == 0 || src_[ws - 1] == '\n') text.resize(text.size() - (open - ws));
      }
      emit_text(std::move(text), pos);
      line_ += count_lines(pos, open);
      pos = open + 2 + ((mod == '-' || mod == '+') ? 1 : 0);
      if (kind == '#') {
        const size_t close = src_.find("#}", pos);
        if (close == std::string::npos) fail_line(line_, "unclosed comment");
        line_ += count_lines(pos, close);
        set_pending(close > pos ? src_[close - 1] : '\0', true);
        pos = close + 2;
      } else {
        toks_.push_back({kind == '{' ? Tok::kVarBegin : Tok::kBlockBegin, "", {}, line_});
        pos = lex_tag(pos, kind == '{' ? "}}" : "%}");
      }
    }
    toks_.push_back({Tok::kEof, "", {}, line_});
    return std::move(toks_);
  }

 private:
  int count_lines(size_t a, size_t b) const {
    int n = 0;
    for (size_t i = a; i < b; ++i) n += src_[i] == '\n';
    return n;
  }

  void emit_text(std::string text, size_t) {
    if (!text.empty()) toks_.push_back({Tok::kText, std::move(text), {}, line_});
  }

  // modifier: the character before the closing delimiter ('-', '+' or other); block: a block or
  // comment tag (trim_blocks applies), not {{ }}.
  void set_pending(char modifier, bool block) {
    strip_next_ = modifier == '-';
    trim_newline_ = !strip_next_ && block && modifier != '+';
  }

  void apply_pending(std::string& text) {
    if (strip_next_) {
      text = py_strip(text, nullptr, true, false);
    } else if (trim_newline_ && !text.empty() && text[0] == '\n') {
      text.erase(0, 1);
    }
    strip_next_ = trim_newline_ = false;
  }

  // Tokens of one {{ }} or {% %} tag from pos; returns the position after the closing delimiter.
  size_t lex_tag(size_t pos, const char* close) {
    const bool block = close[0] == '%';
    for (;;) {
      while (pos < src_.size() && std::strchr(" \t\n", src_[pos])) line_ += src_[pos++] == '\n';
      if (pos >= src_.size()) fail_line(line_, std::string("missing '") + close + "'");
      for (const char m : {'-', '+', '\0'}) {
        const size_t at = pos + (m ? 1 : 0);
        if ((m && src_[pos] != m) || src_.compare(at, 2, close) != 0) continue;
        set_pending(m, block);
        toks_.push_back({block ? Tok::kBlockEnd : Tok::kVarEnd, "", {}, line_});
        return at + 2;
      }
      const char c = src_[pos];
      if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
        size_t e = pos;
        while (e < src_.size() && (std::isalnum(static_cast<unsigned char>(src_[e])) || src_[e] == '_')) ++e;
        toks_.push_back({Tok::kName, src_.substr(pos, e - pos), {}, line_});
        pos = e;
      } else if (std::isdigit(static_cast<unsigned char>(c))) {
        pos = lex_number(pos);
      } else if (c == '\'' || c == '"') {
        pos = lex_string(pos);
      } else {
        bool found = false;
        for (const char* op : kOps) {
          if (src_.compare(pos, std::strlen(op), op) == 0) {
            toks_.push_back({Tok::kOp, op, {}, line_});
            pos += std::strlen(op);
            found = true;
            break;
          }
        }
        if (!found) fail_line(line_, std::string("unexpected character '") + c + "'");
      }
    }
  }

  size_t lex_number(size_t pos) {
    size_t e = pos;
    while (e < src_.size() && std::isdigit(static_cast<unsigned char>(src_[e]))) ++e;
    bool is_float = false;
    if (e + 1 < src_.size() && src_[e] == '.' && std::isdigit(static_cast<unsigned char>(src_[e + 1]))) {
      is_float = true;
      ++e;
      while (e < src_.size() && std::isdigit(static_cast<unsigned char>(src_[e]))) ++e;
    }
    if (e < src_.size() && (src_[e] == 'e' || src_[e] == 'E')) {
      size_t x = e + 1;
      if (x < src_.size() && (src_[x] == '+' || src_[x] == '-')) ++x;
      if (x < src_.size() && std::isdigit(static_cast<unsigned char>(src_[x]))) {
        is_float = true;
        e = x;
        while (e < src_.size() && std::isdigit(static_cast<unsigned char>(src_[e]))) ++e;
      }
    }
    const std::string text = src_.substr(pos, e - pos);
    if (is_float) {
      toks_.push_back({Tok::kFloat, text, Value(std::stod(text)), line_});
    } else {
      toks_.push_back({Tok::kInt, text, Value(std::stoll(text)), line_});
    }
    return e;
  }

  // A string literal with Python's escapes (jinja2 decodes literals with "unicode-escape").
  size_t lex_string(size_t pos) {
    const char q = src_[pos];
    const int start_line = line_;
    std::string out;
    size_t i = pos + 1;
    for (;; ++i) {
      if (i >= src_.size()) fail_line(start_line, "unterminated string literal");
      const char c = src_[i];
      if (c == q) break;
      if (c == '\n') ++line_;
      if (c != '\\' || i + 1 >= src_.size()) {
        out += c;
        continue;
      }
      const char e = src_[++i];
      auto hex = [&](int digits) {
        if (i + digits >= src_.size()) fail_line(line_, "truncated \\x/\\u escape in a string literal");
        const uint32_t cp = std::stoul(src_.substr(i + 1, digits), nullptr, 16);
        i += digits;
        unicode::append_utf8(out, cp);
      };
      switch (e) {
        case 'n':
          out += '\n';
          break;
        case 't':
          out += '\t';
          break;
        case 'r':
          out += '\r';
          break;
        case '\\':
          out += '\\';
          break;
        case '\'':
          out += '\'';
          break;
        case '"':
          out += '"';
          break;
        case 'a':
          out += '\a';
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'v':
          out += '\v';
          break;
        case '0':
          out += '\0';
          break;
        case '\n':
          ++line_;
          break;  // a backslash-newline continues the literal
        case 'x':
          hex(2);
          break;
        case 'u':
          hex(4);
          break;
        case 'U':
          hex(8);
          break;
        default:
          out += '\\';
          out += e;  // unknown escapes stay as written, as in Python
      }
    }
    toks_.push_back({Tok::kString, std::move(out), {}, start_line});
    return i + 1;
  }

  std::string src_;
  std::vector<Tok> toks_;
  int line_ = 1;
  bool strip_next_ = false, trim_newline_ = false;
};

class Parser {
 public:
  explicit Parser(std::vector<Tok> toks) : t_(std::move(toks)) {}

  Body parse_all() {
    std::string end;
    Body body = parse_body({}, end);
    return body;
  }

 private:
  const Tok& cur() const { return t_[i_]; }
  const Tok& peek(size_t k = 1) const { return t_[std::min(i_ + k, t_.size() - 1)]; }
  bool is_op(const char* op) const { return cur().type == Tok::kOp && cur().s == op; }
  bool is_name(const char* n) const { return cur().type == Tok::kName && cur().s == n; }
  bool accept_op(const char* op) {
    if (!is_op(op)) return false;
    ++i_;
    return true;
  }
  bool accept_name(const char* n) {
    if (!is_name(n)) return false;
    ++i_;
    return true;
  }
  void expect_op(const char* op) {
    if (!accept_op(op)) fail_line(cur().line, str("expected '", op, "', got ", describe(cur())));
  }
  std::string expect_name() {
    if (cur().type != Tok::kName) fail_line(cur().line, str("expected a name, got ", describe(cur())));
    return t_[i_++].s;
  }
  void expect_block_end() {
    if (cur().type != Tok::kBlockEnd) fail_line(cur().line, str("expected '%}', got ", describe(cur())));
    ++i_;
  }
  static std::string describe(const Tok& t) {
    switch (t.type) {
      case Tok::kText:
        return "text";
      case Tok::kVarBegin:
        return "'{{'";
      case Tok::kVarEnd:
        return "'}}'";
      case Tok::kBlockBegin:
        return "'{%'";
      case Tok::kBlockEnd:
        return "'%}'";
      case Tok::kEof:
        return "the end of the template";
      case Tok::kString:
        return "a string";
      default:
        return "'" + t.s + "'";
    }
  }

  static ExprP node(Expr::Kind k, int line) {
    auto e = std::make_unique<Expr>();
    e->kind = k;
    e->line = line;
    return e;
  }
  static std::unique_ptr<Stmt> stmt(Stmt::Kind k, int line) {
    auto s = std::make_unique<Stmt>();
    s->kind = k;
    s->line = line;
    return s;
  }

  // Statements until a block tag named in `ends` (its name consumed, returned in `end`) or EOF
  // (allowed only when `ends` is empty).
  Body parse_body(const std::vector<std::string>& ends, std::string& end, int open_line = 0) {
    Body body;
    for (;;) {
      const Tok& t = cur();
      if (t.type == Tok::kEof) {
        // Named at the opening tag: the end of the template says nothing about where it went wrong.
        if (!ends.empty())
          fail_line(open_line, str("'{% ", ends.back().substr(3), " %}' has no '{% ", ends.back(), " %}'"));
        return body;
      }
      if (t.type == Tok::kText) {
        auto s = stmt(Stmt::kText, t.line);
        s->text = t.s;
        body.push_back(std::move(s));
        ++i_;
      } else if (t.type == Tok::kVarBegin) {
        auto s = stmt(Stmt::kOutput, t.line);
        ++i_;
        s->expr = parse_expression();
        if (cur().type != Tok::kVarEnd) fail_line(cur().line, str("expected '}}', got ", describe(cur())));
        ++i_;
        body.push_back(std::move(s));
      } else if (t.type == Tok::kBlockBegin) {
        ++i_;
        const int line = cur().line;
        const std::string name = expect_name();
        for (const std::string& e : ends) {
          if (name == e) {
            end = name;
            return body;
          }
        }
        body.push_back(parse_statement(name, line));
      } else {
        fail_line(t.line, str("unexpected ", describe(t)));
      }
    }
  }

  std::unique_ptr<Stmt> parse_statement(const std::string& name, int line) {
    std::string end;
    if (name == "if") {
      auto s = stmt(Stmt::kIf, line);
      ExprP cond = parse_expression();
      for (;;) {
        expect_block_end();
        Body b = parse_body({"elif", "else", "endif"}, end, line);
        s->branches.emplace_back(std::move(cond), std::move(b));
        if (end == "elif") {
          cond = parse_expression();
          continue;
        }
        if (end == "else") {
          expect_block_end();
          s->else_body = parse_body({"endif"}, end, line);
        }
        expect_block_end();
        return s;
      }
    }
    if (name == "for") {
      auto s = stmt(Stmt::kFor, line);
      do s->targets.push_back(expect_name());
      while (accept_op(","));
      if (!accept_name("in")) fail_line(cur().line, "expected 'in' in for loop");
      s->expr = parse_or();
      if (accept_name("if")) s->filter = parse_or();
      if (is_name("recursive")) fail_line(line, "recursive for loops are not supported");
      expect_block_end();
      ++loop_depth_;
      s->body = parse_body({"else", "endfor"}, end, line);
      --loop_depth_;
      if (end == "else") {
        expect_block_end();
        s->else_body = parse_body({"endfor"}, end, line);
      }
      expect_block_end();
      return s;
    }
    if (name == "set") {
      auto s = stmt(Stmt::kSet, line);
      s->targets.push_back(expect_name());
      if (accept_op(".")) {
        s->attr = expect_name();
      } else {
        while (accept_op(",")) s->targets.push_back(expect_name());
      }
      if (accept_op("=")) {
        s->expr = parse_expression();
        expect_block_end();
        return s;
      }
      if (s->targets.size() != 1 || !s->attr.empty()) fail_line(line, "block set takes one plain name");
      s->kind = Stmt::kSetBlock;
      expect_block_end();
      s->body = parse_body({"endset"}, end, line);
      expect_block_end();
      return s;
    }
    if (name == "macro") {
      auto s = stmt(Stmt::kMacro, line);
      s->attr = expect_name();
      expect_op("(");
      while (!accept_op(")")) {
        std::string p = expect_name();
        ExprP def;
        if (accept_op("=")) def = parse_expression();
        s->params.emplace_back(std::move(p), std::move(def));
        if (!is_op(")")) expect_op(",");
      }
      expect_block_end();
      const int outer_loops = std::exchange(loop_depth_, 0);
      s->body = parse_body({"endmacro"}, end, line);
      loop_depth_ = outer_loops;
      expect_block_end();
      return s;
    }
    if (name == "break" || name == "continue") {
      if (loop_depth_ == 0) fail_line(line, str("'{% ", name, " %}' outside a for loop"));
      expect_block_end();
      return stmt(name == "break" ? Stmt::kBreak : Stmt::kContinue, line);
    }
    if (name == "generation") {
      auto s = stmt(Stmt::kBlock, line);
      expect_block_end();
      s->body = parse_body({"endgeneration"}, end, line);
      expect_block_end();
      return s;
    }
    fail_line(line, str("unsupported tag '{% ", name, " %}'"));
  }

  // ---- expressions (precedence as in jinja2's parser) ----

  ExprP parse_expression() {
    ExprP e = parse_or();
    while (is_name("if")) {
      const int line = cur().line;
      ++i_;
      auto c = node(Expr::kCond, line);
      c->kids.push_back(std::move(e));
      c->kids.push_back(parse_or());
      c->kids.push_back(accept_name("else") ? parse_expression() : nullptr);
      e = std::move(c);
    }
    return e;
  }

  ExprP binary(const std::string& op, ExprP a, ExprP b, int line) {
    auto e = node(Expr::kBinary, line);
    e->name = op;
    e->kids.push_back(std::move(a));
    e->kids.push_back(std::move(b));
    return e;
  }

  ExprP parse_or() {
    ExprP e = parse_and();
    while (is_name("or")) {
      const int line = t_[i_++].line;
      e = binary("or", std::move(e), parse_and(), line);
    }
    return e;
  }
  ExprP parse_and() {
    ExprP e = parse_not();
    while (is_name("and")) {
      const int line = t_[i_++].line;
      e = binary("and", std::move(e), parse_not(), line);
    }
    return e;
  }
  ExprP parse_not() {
    if (is_name("not")) {
      auto e = node(Expr::kUnary, t_[i_++].line);
      e->name = "not";
      e->kids.push_back(parse_not());
      return e;
    }
    return parse_compare();
  }
  ExprP parse_compare() {
    ExprP e = parse_math1();
    bool compared = false;
    for (;;) {
      std::string op;
      const int line = cur().line;
      if (cur().type == Tok::kOp && (cur().s == "==" || cur().s == "!=" || cur().s == "<" ||
                                     cur().s == "<=" || cur().s == ">" || cur().s == ">=")) {
        op = t_[i_++].s;
      } else if (is_name("in")) {
        op = "in";
        ++i_;
      } else if (is_name("not") && peek().type == Tok::kName && peek().s == "in") {
        op = "not in";
        i_ += 2;
      } else {
        return e;
      }
      if (compared) fail_line(line, "chained comparisons (a < b < c) are not supported");
      compared = true;
      e = binary(op, std::move(e), parse_math1(), line);
    }
  }
  ExprP parse_math1() {
    ExprP e = parse_concat();
    while (is_op("+") || is_op("-")) {
      const Tok& t = t_[i_++];
      e = binary(t.s, std::move(e), parse_concat(), t.line);
    }
    return e;
  }
  ExprP parse_concat() {
    ExprP e = parse_math2();
    while (is_op("~")) {
      const int line = t_[i_++].line;
      e = binary("~", std::move(e), parse_math2(), line);
    }
    return e;
  }
  ExprP parse_math2() {
    ExprP e = parse_pow();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      const Tok& t = t_[i_++];
      e = binary(t.s, std::move(e), parse_pow(), t.line);
    }
    return e;
  }
  ExprP parse_pow() {
    ExprP e = parse_unary(true);
    while (is_op("**")) {
      const int line = t_[i_++].line;
      e = binary("**", std::move(e), parse_unary(true), line);
    }
    return e;
  }
  ExprP parse_unary(bool with_filter) {
    ExprP e;
    if (is_op("-") || is_op("+")) {
      e = node(Expr::kUnary, cur().line);
      e->name = t_[i_++].s;
      e->kids.push_back(parse_unary(false));
    } else {
      e = parse_primary();
    }
    e = parse_postfix(std::move(e));
    return with_filter ? parse_filter_expr(std::move(e)) : std::move(e);
  }

  ExprP parse_primary() {
    const Tok& t = cur();
    const int line = t.line;
    if (t.type == Tok::kName) {
      ++i_;
      auto e = node(Expr::kLiteral, line);
      if (t.s == "true" || t.s == "True") {
        e->literal = true;
      } else if (t.s == "false" || t.s == "False") {
        e->literal = false;
      } else if (t.s == "none" || t.s == "None") {
        e->literal = nullptr;
      } else {
        e->kind = Expr::kName;
        e->name = t.s;
      }
      return e;
    }
    if (t.type == Tok::kString) {
      auto e = node(Expr::kLiteral, line);
      std::string s;
      while (cur().type == Tok::kString) s += t_[i_++].s;  // adjacent literals concatenate
      e->literal = s;
      return e;
    }
    if (t.type == Tok::kInt || t.type == Tok::kFloat) {
      auto e = node(Expr::kLiteral, line);
      e->literal = t.num;
      ++i_;
      return e;
    }
    if (accept_op("(")) {
      if (accept_op(")")) return node(Expr::kList, line);  // the empty tuple
      ExprP e = parse_expression();
      if (is_op(",")) {
        auto tup = node(Expr::kList, line);
        tup->kids.push_back(std::move(e));
        while (accept_op(",") && !is_op(")")) tup->kids.push_back(parse_expression());
        e = std::move(tup);
      }
      expect_op(")");
      return e;
    }
    if (accept_op("[")) {
      auto e = node(Expr::kList, line);
      while (!accept_op("]")) {
        e->kids.push_back(parse_expression());
        if (!is_op("]")) expect_op(",");
      }
      return e;
    }
    if (accept_op("{")) {
      auto e = node(Expr::kDict, line);
      while (!accept_op("}")) {
        e->kids.push_back(parse_expression());
        expect_op(":");
        e->kids.push_back(parse_expression());
        if (!is_op("}")) expect_op(",");
      }
      return e;
    }
    fail_line(line, str("unexpected ", describe(t), " in an expression"));
  }

  void parse_args(Expr& call) {
    while (!accept_op(")")) {
      if (cur().type == Tok::kName && peek().type == Tok::kOp && peek().s == "=") {
        std::string key = t_[i_].s;
        i_ += 2;
        call.kwargs.emplace_back(std::move(key), parse_expression());
      } else {
        if (!call.kwargs.empty()) fail_line(cur().line, "positional argument after a keyword argument");
        call.kids.push_back(parse_expression());
      }
      if (!is_op(")")) expect_op(",");
    }
  }

  ExprP parse_postfix(ExprP e) {
    for (;;) {
      const int line = cur().line;
      if (accept_op(".")) {
        auto a = node(Expr::kAttr, line);
        if (cur().type == Tok::kInt) {
          a->kind = Expr::kIndex;  // x.0 is x[0] in Jinja
          a->kids.push_back(std::move(e));
          a->kids.push_back(parse_primary());
        } else {
          a->name = expect_name();
          a->kids.push_back(std::move(e));
        }
        e = std::move(a);
      } else if (accept_op("[")) {
        ExprP parts[3];
        int colons = 0;
        for (;;) {
          if (is_op("]")) break;
          if (accept_op(":")) {
            if (++colons > 2) fail_line(line, "a slice has at most two ':'");
            continue;
          }
          if (parts[colons]) fail_line(line, "tuple subscripts are not supported");
          parts[colons] = parse_expression();
        }
        expect_op("]");
        auto s = node(colons ? Expr::kSlice : Expr::kIndex, line);
        s->kids.push_back(std::move(e));
        if (!colons && !parts[0]) fail_line(line, "empty subscript");
        s->kids.push_back(std::move(parts[0]));
        if (colons) {
          s->kids.push_back(std::move(parts[1]));
          s->kids.push_back(std::move(parts[2]));
        }
        e = std::move(s);
      } else if (accept_op("(")) {
        auto c = node(Expr::kCall, line);
        c->kids.push_back(std::move(e));
        parse_args(*c);
        e = std::move(c);
      } else {
        return e;
      }
    }
  }

  ExprP parse_filter_expr(ExprP e) {
    for (;;) {
      const int line = cur().line;
      if (accept_op("|")) {
        auto f = node(Expr::kFilter, line);
        f->name = expect_name();
        if (!known_filter(f->name)) fail_line(line, str("unsupported filter '", f->name, "'"));
        f->kids.push_back(std::move(e));
        if (accept_op("(")) parse_args(*f);
        e = std::move(f);
      } else if (accept_name("is")) {
        auto t = node(Expr::kTest, line);
        t->negate = accept_name("not");
        t->name = expect_name();
        if (!known_test(t->name)) fail_line(line, str("unsupported test 'is ", t->name, "'"));
        t->kids.push_back(std::move(e));
        const Tok& a = cur();
        if (accept_op("(")) {
          parse_args(*t);
        } else if ((a.type == Tok::kName && a.s != "else" && a.s != "or" && a.s != "and") ||
                   a.type == Tok::kString || a.type == Tok::kInt || a.type == Tok::kFloat ||
                   (a.type == Tok::kOp && (a.s == "[" || a.s == "{"))) {
          // One argument without parentheses: `is divisibleby 3`, `is sameas false`.
          t->kids.push_back(parse_postfix(parse_primary()));
        }
        e = std::move(t);
      } else if (accept_op("(")) {
        auto c = node(Expr::kCall, line);
        c->kids.push_back(std::move(e));
        parse_args(*c);
        e = std::move(c);
      } else {
        return e;
      }
    }
  }

  std::vector<Tok> t_;
  size_t i_ = 0;
  int loop_depth_ = 0;  // for bodies being parsed around the current tag (0 inside a macro)
};

}  // namespace

Body parse_template(std::string_view source) {
  return Parser(Lexer(source).run()).parse_all();
}

}  // namespace qwen::jinja
