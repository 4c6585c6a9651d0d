// Copyright goro authors.
//
// The errors of goro::net (net.h "Errors"): how they are built, and the
// helpers programs test them with.

#include <errno.h>

#include <cstring>
#include <optional>
#include <string>

#include "absl/strings/cord.h"
#include "absl/strings/numbers.h"
#include "net/internal/util.h"
#include "net/net.h"

namespace goro::net {

using impl::asv;
using impl::cat;
using net_internal::PollErr;

namespace {

// Every error of this package carries its kind here ("closed", "timeout",
// "errno:N"), so that the helpers do not parse messages.
constexpr char kKindUrl[] = "goro.net/kind";

std::string errno_text(int e) {
  char buf[128];
  const char* s = strerror_r(e, buf, sizeof(buf));  // GNU: may return static
  std::string t = s;
  if (!t.empty() && t[0] >= 'A' && t[0] <= 'Z' &&
      !(t.size() > 1 && t[1] >= 'A' && t[1] <= 'Z')) {
    t[0] = static_cast<char>(t[0] - 'A' + 'a');  // Go's lower-case style
  }
  return t;
}

std::optional<std::string> kind_of(const absl::Status& s) {
  absl::optional<absl::Cord> c = s.GetPayload(kKindUrl);
  if (!c) return std::nullopt;
  return std::string(*c);
}

}  // namespace

namespace impl {

absl::Status make_error(absl::StatusCode code, std::string msg,
                        std::string_view kind) {
  absl::Status st(code, msg);
  st.SetPayload(kKindUrl, absl::Cord(asv(kind)));
  return st;
}

absl::Status errno_error(std::string_view what, int e) {
  return make_error(absl::ErrnoToStatus(e, "").code(),
                    cat(what, ": ", errno_text(e)),
                    cat("errno:", static_cast<long long>(e)));
}

absl::Status closed_error(std::string_view what) {
  return make_error(absl::StatusCode::kFailedPrecondition,
                    cat(what, ": use of closed network connection"), "closed");
}

absl::Status timeout_error(std::string_view what) {
  return make_error(absl::StatusCode::kDeadlineExceeded,
                    cat(what, ": i/o timeout"), "timeout");
}

absl::Status ended_error(std::string_view what) {
  return make_error(absl::StatusCode::kFailedPrecondition,
                    cat(what, ": goro runtime has ended"), "ended");
}

absl::Status poll_error(std::string_view what, PollErr e) {
  switch (e) {
    case PollErr::kClosing:
      return closed_error(what);
    case PollErr::kTimeout:
      return timeout_error(what);
    case PollErr::kNoRuntime:
      return ended_error(what);
    case PollErr::kNone:
      break;
  }
  return absl::OkStatus();
}

std::int64_t to_ns(Deadline t) {
  if (t == Deadline{}) return 0;
  const std::int64_t ns =
      std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch())
          .count();
  return ns > 0 ? ns : -1;  // a time before the epoch: long past
}

}  // namespace impl

bool is_timeout(const absl::Status& s) {
  return s.code() == absl::StatusCode::kDeadlineExceeded;
}

bool is_closed(const absl::Status& s) {
  return s.code() == absl::StatusCode::kFailedPrecondition &&
         kind_of(s) == "closed";
}

bool is_temporary(const absl::Status& s) {
  if (is_timeout(s)) return true;
  std::optional<std::string> k = kind_of(s);
  if (!k || k->rfind("errno:", 0) != 0) return false;
  int e = 0;
  if (!absl::SimpleAtoi(asv(std::string_view(*k).substr(6)), &e)) return false;
  switch (e) {
    case EMFILE:
    case ENFILE:
    case ENOBUFS:
    case ENOMEM:
    case ECONNABORTED:
    case ECONNRESET:
    case EAGAIN:
    case ETIMEDOUT:
    case EINTR:
      return true;
    default:
      return false;
  }
}

}  // namespace goro::net
