#include "record_queue.h"

#include <cassert>
#include <cstring>
#include <utility>

namespace relay {

ChunkPool::ChunkPool(std::size_t headroom, std::size_t capacity, std::size_t max_free)
    : headroom_(headroom), capacity_(capacity), max_free_(max_free) {}

std::unique_ptr<std::uint8_t[]> ChunkPool::acquire() {
  if (!free_.empty()) {
    auto c = std::move(free_.back());
    free_.pop_back();
    return c;
  }
  // Not value-initialised: every byte is written before it is read.
  return std::unique_ptr<std::uint8_t[]>(new std::uint8_t[headroom_ + capacity_]);
}

void ChunkPool::release(std::unique_ptr<std::uint8_t[]> chunk) {
  if (chunk && free_.size() < max_free_) free_.push_back(std::move(chunk));
}

RecordQueue::~RecordQueue() {
  for (Chunk& c : chunks_) release(c);
}

RecordQueue::Chunk RecordQueue::new_chunk() {
  const std::size_t h = pool_->headroom();
  return Chunk{pool_->acquire(), h, h, h};
}

void RecordQueue::release(Chunk& c) { pool_->release(std::move(c.mem)); }

std::size_t RecordQueue::room(const Chunk& c) const {
  return pool_->headroom() + pool_->capacity() - c.end;
}

void RecordQueue::open_record(std::size_t size) {
  assert(!has_open_record() && size != 0 && size <= pool_->capacity());
  if (chunks_.empty() || room(chunks_.back()) < size) chunks_.push_back(new_chunk());
  open_size_ = size;
  open_filled_ = 0;
}

void RecordQueue::fill(std::span<const std::uint8_t> bytes) {
  assert(bytes.size() <= open_remaining());
  Chunk& tail = chunks_.back();
  std::memcpy(tail.mem.get() + tail.end, bytes.data(), bytes.size());
  tail.end += bytes.size();
  open_filled_ += bytes.size();
}

std::span<const std::uint8_t> RecordQueue::open_bytes() const {
  if (!has_open_record()) return {};
  const Chunk& tail = chunks_.back();
  return {tail.mem.get() + tail.committed, open_filled_};
}

void RecordQueue::commit_record() {
  assert(has_open_record() && open_filled_ == open_size_);
  Chunk& tail = chunks_.back();
  tail.committed = tail.end;
  committed_bytes_ += open_size_;
  open_size_ = 0;
  open_filled_ = 0;
}

void RecordQueue::abort_record() {
  if (!has_open_record()) return;
  Chunk& tail = chunks_.back();
  tail.end = tail.committed;
  open_size_ = 0;
  open_filled_ = 0;
  if (tail.begin == tail.end) {
    release(tail);
    chunks_.pop_back();
  }
}

void RecordQueue::push_back_record(std::span<const std::uint8_t> record) {
  // Rare path (records injected on connect/disconnect): move the open record
  // out of the way so the injected one lands on a record boundary before it.
  std::vector<std::uint8_t> reopened;
  std::size_t reopened_size = 0;
  if (has_open_record()) {
    const auto partial = open_bytes();
    reopened.assign(partial.begin(), partial.end());
    reopened_size = open_size_;
    abort_record();
  }
  open_record(record.size());
  fill(record);
  commit_record();
  if (reopened_size != 0) {
    open_record(reopened_size);
    fill(reopened);
  }
}

void RecordQueue::push_front_record(std::span<const std::uint8_t> record) {
  assert(!record.empty() && record.size() <= pool_->capacity());
  chunks_.push_front(new_chunk());
  Chunk& c = chunks_.front();
  std::memcpy(c.mem.get() + c.end, record.data(), record.size());
  c.end += record.size();
  c.committed = c.end;
  committed_bytes_ += record.size();
}

void RecordQueue::drop_committed() {
  while (chunks_.size() > (has_open_record() ? 1U : 0U)) {
    release(chunks_.front());
    chunks_.pop_front();
  }
  if (!chunks_.empty()) chunks_.front().begin = chunks_.front().committed;
  committed_bytes_ = 0;
}

std::span<std::uint8_t> RecordQueue::front() {
  if (chunks_.empty()) return {};
  Chunk& head = chunks_.front();
  return {head.mem.get() + head.begin, head.committed - head.begin};
}

void RecordQueue::pop_front(std::size_t n) {
  Chunk& head = chunks_.front();
  assert(n <= head.committed - head.begin);
  head.begin += n;
  committed_bytes_ -= n;
  if (head.begin == head.end) {
    release(head);
    chunks_.pop_front();
  }
}

}  // namespace relay
