// How the shim's C functions report failure: a malloc'd copy of the message (freed with
// pzt_free_error), so that no C++ exception unwinds into Rust. libtorch's messages lose their
// C++ backtrace on the way.
#pragma once
#include <c10/util/Exception.h>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>

inline char* pzt_dup_error(const std::string& s) {
  char* out = static_cast<char*>(malloc(s.size() + 1));
  if (out != nullptr) memcpy(out, s.c_str(), s.size() + 1);
  return out;
}

// An exception's message, without libtorch's backtrace.
inline std::string pzt_error_text(const std::exception& e) {
  auto* c = dynamic_cast<const c10::Error*>(&e);
  return c != nullptr ? c->what_without_backtrace() : e.what();
}

#define PZT_TRY try {
#define PZT_CATCH                                   \
  return nullptr;                                   \
  }                                                 \
  catch (const std::exception& e) {                 \
    return pzt_dup_error(pzt_error_text(e));        \
  }                                                 \
  catch (...) {                                     \
    return pzt_dup_error("unknown C++ exception");  \
  }
