// What csrc/dist.cpp and csrc/dist_nccl.cpp share: a process group behind c10d's Backend, and
// the store it rendezvoused over.
#pragma once
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <chrono>

struct PztStore {
  c10::intrusive_ptr<c10d::TCPStore> tcp;
  c10::intrusive_ptr<c10d::Store> store;
};

struct PztGroup {
  c10::intrusive_ptr<c10d::Backend> pg;
  std::chrono::milliseconds timeout;
};
