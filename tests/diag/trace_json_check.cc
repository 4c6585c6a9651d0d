// Copyright goro authors.

#include "tests/diag/trace_json_check.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <sstream>

namespace goro_test {

const Json* Json::get(const std::string& key) const {
  if (type != Type::kObject) return nullptr;
  for (const auto& [k, v] : obj) {
    if (k == key) return &v;
  }
  return nullptr;
}

namespace {

class Parser {
 public:
  explicit Parser(const std::string& s) : s_(s) {}

  bool Parse(Json* out, std::string* error) {
    Ws();
    if (!Value(out, 0)) {
      *error = err_ + " at offset " + std::to_string(i_);
      return false;
    }
    Ws();
    if (i_ != s_.size()) {
      *error = "trailing data at offset " + std::to_string(i_);
      return false;
    }
    return true;
  }

 private:
  bool Fail(const char* what) {
    if (err_.empty()) err_ = what;
    return false;
  }
  void Ws() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' ||
                              s_[i_] == '\n' || s_[i_] == '\r')) {
      ++i_;
    }
  }
  bool Lit(const char* w) {
    const std::size_t n = std::char_traits<char>::length(w);
    if (s_.compare(i_, n, w) != 0) return Fail("bad literal");
    i_ += n;
    return true;
  }

  bool Value(Json* v, int depth) {
    if (depth > 64) return Fail("too deep");
    if (i_ >= s_.size()) return Fail("unexpected end");
    switch (s_[i_]) {
      case '{':
        return Object(v, depth);
      case '[':
        return Array(v, depth);
      case '"':
        v->type = Json::Type::kString;
        return String(&v->str);
      case 't':
        v->type = Json::Type::kBool;
        v->b = true;
        return Lit("true");
      case 'f':
        v->type = Json::Type::kBool;
        return Lit("false");
      case 'n':
        return Lit("null");
      default:
        return Number(v);
    }
  }

  bool Object(Json* v, int depth) {
    v->type = Json::Type::kObject;
    ++i_;
    Ws();
    if (i_ < s_.size() && s_[i_] == '}') {
      ++i_;
      return true;
    }
    for (;;) {
      Ws();
      if (i_ >= s_.size() || s_[i_] != '"') return Fail("expected a key");
      std::string key;
      if (!String(&key)) return false;
      Ws();
      if (i_ >= s_.size() || s_[i_] != ':') return Fail("expected ':'");
      ++i_;
      Ws();
      Json val;
      if (!Value(&val, depth + 1)) return false;
      v->obj.emplace_back(std::move(key), std::move(val));
      Ws();
      if (i_ < s_.size() && s_[i_] == ',') {
        ++i_;
        continue;
      }
      if (i_ < s_.size() && s_[i_] == '}') {
        ++i_;
        return true;
      }
      return Fail("expected ',' or '}'");
    }
  }

  bool Array(Json* v, int depth) {
    v->type = Json::Type::kArray;
    ++i_;
    Ws();
    if (i_ < s_.size() && s_[i_] == ']') {
      ++i_;
      return true;
    }
    for (;;) {
      Ws();
      Json val;
      if (!Value(&val, depth + 1)) return false;
      v->arr.push_back(std::move(val));
      Ws();
      if (i_ < s_.size() && s_[i_] == ',') {
        ++i_;
        continue;
      }
      if (i_ < s_.size() && s_[i_] == ']') {
        ++i_;
        return true;
      }
      return Fail("expected ',' or ']'");
    }
  }

  static void Utf8(std::uint32_t cp, std::string* out) {
    if (cp < 0x80) {
      *out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      *out += static_cast<char>(0xC0 | (cp >> 6));
      *out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      *out += static_cast<char>(0xE0 | (cp >> 12));
      *out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      *out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      *out += static_cast<char>(0xF0 | (cp >> 18));
      *out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      *out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      *out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  bool Hex4(std::uint32_t* cp) {
    if (i_ + 4 > s_.size()) return Fail("short \\u escape");
    *cp = 0;
    for (int k = 0; k < 4; ++k) {
      const char c = s_[i_++];
      *cp <<= 4;
      if (c >= '0' && c <= '9') {
        *cp |= static_cast<std::uint32_t>(c - '0');
      } else if (c >= 'a' && c <= 'f') {
        *cp |= static_cast<std::uint32_t>(c - 'a' + 10);
      } else if (c >= 'A' && c <= 'F') {
        *cp |= static_cast<std::uint32_t>(c - 'A' + 10);
      } else {
        return Fail("bad \\u escape");
      }
    }
    return true;
  }

  // Raw bytes must be valid UTF-8 (JSON text is Unicode).
  bool RawUtf8(std::string* out) {
    const auto b = static_cast<unsigned char>(s_[i_]);
    std::size_t n = (b & 0xE0) == 0xC0   ? 2
                    : (b & 0xF0) == 0xE0 ? 3
                    : (b & 0xF8) == 0xF0 ? 4
                                         : 0;
    if (n == 0 || i_ + n > s_.size()) return Fail("invalid UTF-8");
    for (std::size_t k = 1; k < n; ++k) {
      if ((static_cast<unsigned char>(s_[i_ + k]) & 0xC0) != 0x80) {
        return Fail("invalid UTF-8");
      }
    }
    out->append(s_, i_, n);
    i_ += n;
    return true;
  }

  bool String(std::string* out) {
    ++i_;  // the opening quote
    for (;;) {
      if (i_ >= s_.size()) return Fail("unterminated string");
      const auto c = static_cast<unsigned char>(s_[i_]);
      if (c == '"') {
        ++i_;
        return true;
      }
      if (c < 0x20) return Fail("control character in a string");
      if (c >= 0x80) {
        if (!RawUtf8(out)) return false;
        continue;
      }
      if (c != '\\') {
        *out += static_cast<char>(c);
        ++i_;
        continue;
      }
      if (++i_ >= s_.size()) return Fail("unterminated escape");
      const char e = s_[i_++];
      switch (e) {
        case '"':
        case '\\':
        case '/':
          *out += e;
          break;
        case 'b':
          *out += '\b';
          break;
        case 'f':
          *out += '\f';
          break;
        case 'n':
          *out += '\n';
          break;
        case 'r':
          *out += '\r';
          break;
        case 't':
          *out += '\t';
          break;
        case 'u': {
          std::uint32_t cp;
          if (!Hex4(&cp)) return false;
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            std::uint32_t lo;
            if (s_.compare(i_, 2, "\\u") != 0) return Fail("lone surrogate");
            i_ += 2;
            if (!Hex4(&lo) || lo < 0xDC00 || lo > 0xDFFF) {
              return Fail("bad surrogate pair");
            }
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
            return Fail("lone surrogate");
          }
          Utf8(cp, out);
          break;
        }
        default:
          return Fail("bad escape");
      }
    }
  }

  bool Number(Json* v) {
    const std::size_t start = i_;
    auto digits = [&] {
      const std::size_t d = i_;
      while (i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9') ++i_;
      return i_ > d;
    };
    if (i_ < s_.size() && s_[i_] == '-') ++i_;
    if (i_ < s_.size() && s_[i_] == '0') {
      ++i_;
    } else if (!digits()) {
      return Fail("bad value");
    }
    if (i_ < s_.size() && s_[i_] == '.') {
      ++i_;
      if (!digits()) return Fail("bad fraction");
    }
    if (i_ < s_.size() && (s_[i_] == 'e' || s_[i_] == 'E')) {
      ++i_;
      if (i_ < s_.size() && (s_[i_] == '+' || s_[i_] == '-')) ++i_;
      if (!digits()) return Fail("bad exponent");
    }
    v->type = Json::Type::kNumber;
    v->num = std::strtod(s_.substr(start, i_ - start).c_str(), nullptr);
    return true;
  }

  const std::string& s_;
  std::size_t i_ = 0;
  std::string err_;
};

// Times are microseconds with three decimals: equal within half a ns.
constexpr double kEps = 0.0005;

double Num(const Json& ev, const char* key, bool* ok) {
  const Json* v = ev.get(key);
  if (v == nullptr || !v->is_number()) {
    *ok = false;
    return 0;
  }
  return v->num;
}

std::string Str(const Json& ev, const char* key) {
  const Json* v = ev.get(key);
  return v != nullptr && v->is_string() ? v->str : std::string();
}

bool True(const Json& ev, const char* key) {
  const Json* v = ev.get(key);
  return v != nullptr && v->type == Json::Type::kBool && v->b;
}

struct X {
  double ts, dur;
  std::size_t index;
  bool fiber;
};

}  // namespace

bool ParseJson(const std::string& text, Json* out, std::string* error) {
  return Parser(text).Parse(out, error);
}

std::string CheckTrace(const std::string& text, TraceSummary* sum) {
  std::ostringstream bad;
  Json root;
  std::string err;
  if (!ParseJson(text, &root, &err)) return "not JSON: " + err + "\n";
  if (root.type != Json::Type::kObject) return "not a JSON object\n";
  const std::string unit = Str(root, "displayTimeUnit");
  if (unit != "ns" && unit != "ms") bad << "displayTimeUnit is \"" << unit << "\"\n";
  const Json* events = root.get("traceEvents");
  if (events == nullptr || events->type != Json::Type::kArray) {
    return bad.str() + "no traceEvents array\n";
  }
  if (const Json* od = root.get("otherData")) {
    bool ok = true;
    sum->events = Num(*od, "events", &ok);
    sum->dropped = Num(*od, "dropped", &ok);
    sum->dropped_buffer_full = Num(*od, "dropped_buffer_full", &ok);
    sum->dropped_size_limit = Num(*od, "dropped_size_limit", &ok);
    if (!ok) bad << "otherData lacks a count\n";
  } else {
    bad << "no otherData\n";
  }

  bool process_named = false;
  std::map<int, std::vector<X>> by_tid;
  struct End {
    double ts;
    std::size_t index;
    bool fiber;
  };
  std::map<long long, std::vector<End>> outs, ins;
  double last_counter = -1e300;
  for (std::size_t i = 0; i < events->arr.size(); ++i) {
    const Json& ev = events->arr[i];
    const std::string ph = Str(ev, "ph");
    bool ok = true;
    if (ph == "M") {
      const Json* args = ev.get("args");
      const std::string name = Str(ev, "name");
      if (name == "process_name") process_named = true;
      if (name == "thread_name" && args != nullptr) {
        sum->track_names[static_cast<int>(Num(ev, "tid", &ok))] =
            Str(*args, "name");
      }
      if (!ok) bad << "event " << i << ": metadata without tid\n";
      continue;
    }
    if (ph == "C") {
      const double ts = Num(ev, "ts", &ok);
      const Json* args = ev.get("args");
      if (!ok || Str(ev, "name") != "Fibers" || args == nullptr) {
        bad << "event " << i << ": a malformed counter\n";
        continue;
      }
      for (const char* k : {"running", "runnable", "blocking"}) {
        const double v = Num(*args, k, &ok);
        if (!ok || v < 0) bad << "event " << i << ": counter " << k << " " << v << "\n";
      }
      if (ts < last_counter) bad << "event " << i << ": counter goes back in time\n";
      last_counter = ts;
      ++sum->counters;
      continue;
    }
    if (ph != "X") {
      bad << "event " << i << ": unexpected ph \"" << ph << "\"\n";
      continue;
    }
    const double ts = Num(ev, "ts", &ok), dur = Num(ev, "dur", &ok);
    const int tid = static_cast<int>(Num(ev, "tid", &ok));
    Num(ev, "pid", &ok);
    if (!ok || dur < 0) {
      bad << "event " << i << ": X without ts/dur/pid/tid or dur < 0\n";
      continue;
    }
    const bool fiber = Str(ev, "cat") == "fiber";
    by_tid[tid].push_back({ts, dur, i, fiber});
    const std::string name = Str(ev, "name");
    if (fiber) {
      ++sum->fiber_slices;
      sum->slice_names.push_back(name);
      if (const Json* args = ev.get("args")) ++sum->end_reasons[Str(*args, "end")];
    } else if (dur == 0) {
      ++sum->marks;
      const std::string kind = name.substr(0, name.find(" G"));
      ++sum->mark_names[kind];
      if (True(ev, "flow_out")) ++sum->marks_with_arrow[kind];
    }
    if (const Json* id = ev.get("bind_id")) {
      if (!id->is_number()) {
        bad << "event " << i << ": bind_id not a number\n";
        continue;
      }
      const auto key = static_cast<long long>(id->num);
      if (True(ev, "flow_out")) outs[key].push_back({ts, i, fiber});
      if (True(ev, "flow_in")) ins[key].push_back({ts, i, fiber});
      if (!True(ev, "flow_out") && !True(ev, "flow_in")) {
        bad << "event " << i << ": bind_id without a direction\n";
      }
    }
  }
  if (!process_named) bad << "no process_name metadata\n";

  for (auto& [tid, xs] : by_tid) {
    if (sum->track_names.count(tid) == 0) bad << "tid " << tid << " has no thread_name\n";
    // Fiber slices: in file order, in time order, not overlapping.
    std::vector<X> slices;
    for (const X& x : xs) {
      if (x.fiber) slices.push_back(x);
    }
    for (std::size_t k = 1; k < slices.size(); ++k) {
      const X& a = slices[k - 1];
      const X& b = slices[k];
      if (b.ts + kEps < a.ts) {
        bad << "tid " << tid << ": slice at event " << b.index
            << " is earlier than the one before it (event " << a.index << ")\n";
      } else if (a.ts + a.dur > b.ts + kEps) {
        bad << "tid " << tid << ": slices at events " << a.index << " and "
            << b.index << " overlap\n";
      }
    }
    // Everything else nests in one slice or stays out of all.
    std::sort(slices.begin(), slices.end(),
              [](const X& a, const X& b) { return a.ts < b.ts; });
    for (const X& x : xs) {
      if (x.fiber) continue;
      auto it = std::upper_bound(
          slices.begin(), slices.end(), x.ts,
          [](double t, const X& s) { return t < s.ts; });
      // The slice starting at or before x, and the next one.
      if (it != slices.begin()) {
        const X& s = *(it - 1);
        const double end = s.ts + s.dur;
        if (x.ts < end - kEps && x.ts + x.dur > end + kEps) {
          bad << "tid " << tid << ": event " << x.index
              << " overlaps the end of slice " << s.index << "\n";
        }
      }
      if (it != slices.end() && x.ts + x.dur > it->ts + kEps &&
          x.ts < it->ts - kEps) {
        bad << "tid " << tid << ": event " << x.index
            << " overlaps the start of slice " << it->index << "\n";
      }
    }
  }

  for (const auto& [id, o] : outs) {
    auto it = ins.find(id);
    if (o.size() != 1) bad << "flow " << id << ": " << o.size() << " flow_out ends\n";
    if (it == ins.end()) {
      bad << "flow " << id << ": no flow_in end (event " << o[0].index << ")\n";
      continue;
    }
    if (it->second.size() != 1) {
      bad << "flow " << id << ": " << it->second.size() << " flow_in ends\n";
    }
    const End& in = it->second[0];
    if (!in.fiber) bad << "flow " << id << ": flow_in on a non-slice\n";
    if (o[0].ts > in.ts + kEps) {
      bad << "flow " << id << ": goes back in time (events " << o[0].index
          << " -> " << in.index << ")\n";
    }
    ++sum->flows;
  }
  for (const auto& [id, in] : ins) {
    if (outs.count(id) == 0) {
      bad << "flow " << id << ": no flow_out end (event " << in[0].index << ")\n";
    }
  }
  return bad.str();
}

}  // namespace goro_test
