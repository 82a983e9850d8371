#pragma once
// Result<T>: a value or an Error whose text is the user-facing message
// (one line, no trailing newline), in the manner of Firecracker's error enums.

#include <string>
#include <utility>
#include <variant>

#include "base/check.h"

namespace btvm {

struct Error {
  std::string message;
};

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}      // NOLINT: implicit by design
  Result(Error error) : v_(std::move(error)) {}  // NOLINT: implicit by design

  bool ok() const { return std::holds_alternative<T>(v_); }
  explicit operator bool() const { return ok(); }
  T& value() {
    BTVM_CHECK(ok());
    return std::get<T>(v_);
  }
  const T& value() const {
    BTVM_CHECK(ok());
    return std::get<T>(v_);
  }
  T* operator->() { return &value(); }
  T& operator*() { return value(); }
  const Error& error() const {
    BTVM_CHECK(!ok());
    return std::get<Error>(v_);
  }

 private:
  std::variant<T, Error> v_;
};

struct Ok {};
using Status = Result<Ok>;

inline Error MakeError(std::string message) { return Error{std::move(message)}; }

}  // namespace btvm
