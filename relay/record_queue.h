// The records waiting to be sent to one tunnel end.
//
// Bytes are stored in fixed chunks, each the size of the largest WebSocket
// message (docs/protocol.md section 3: tunnel::kMaxFrameSize, 131076 bytes) plus writable headroom
// in front (for the WebSocket frame header), so a chunk is sent as one frame straight from where
// the record bytes were first copied: one copy from the receive buffer, none on the way out. A
// record never straddles two chunks, so every message carries whole records and a record the relay
// injects (STREAM_RESET, SERVICE_IDS) always lands on a record boundary.
//
// Producer side: a record is opened with its full size, filled as its bytes
// arrive (possibly over several WebSocket fragments), then committed or
// aborted. Only committed bytes are ever handed to the consumer.
// Pure: no sockets; the relay server does the writing.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <span>
#include <vector>

namespace relay {

// Recycles chunks between queues so a busy relay does not malloc a 128 KiB
// buffer per message, while idle tunnels hold no chunk at all.
class ChunkPool {
 public:
  ChunkPool(std::size_t headroom, std::size_t capacity, std::size_t max_free);
  ChunkPool(const ChunkPool&) = delete;
  ChunkPool& operator=(const ChunkPool&) = delete;

  std::size_t headroom() const { return headroom_; }
  std::size_t capacity() const { return capacity_; }
  std::unique_ptr<std::uint8_t[]> acquire();
  void release(std::unique_ptr<std::uint8_t[]> chunk);
  std::size_t free_chunks() const { return free_.size(); }

 private:
  std::size_t headroom_;
  std::size_t capacity_;
  std::size_t max_free_;
  std::vector<std::unique_ptr<std::uint8_t[]>> free_;
};

class RecordQueue {
 public:
  explicit RecordQueue(ChunkPool& pool) : pool_(&pool) {}
  ~RecordQueue();
  RecordQueue(const RecordQueue&) = delete;
  RecordQueue& operator=(const RecordQueue&) = delete;

  // Producer. `size` is the whole record, length prefix included, and must
  // not exceed the chunk capacity. At most one record is open at a time.
  void open_record(std::size_t size);
  // Appends to the open record; never more than its remaining size.
  void fill(std::span<const std::uint8_t> bytes);
  std::size_t open_remaining() const { return open_size_ - open_filled_; }
  bool has_open_record() const { return open_size_ != 0; }
  // The open record's bytes so far (valid until the next mutation).
  std::span<const std::uint8_t> open_bytes() const;
  void commit_record();
  void abort_record();

  // Appends a complete record (injected by the relay). An open record stays
  // open and still follows it.
  void push_back_record(std::span<const std::uint8_t> record);
  // Puts a complete record before everything queued (SERVICE_IDS on connect).
  void push_front_record(std::span<const std::uint8_t> record);
  // Forgets every committed, unsent byte (the receiving connection went away);
  // an open record survives.
  void drop_committed();

  // Consumer. The next message: committed, unsent bytes of the first chunk.
  // pool.headroom() bytes before data() may be overwritten by the writer.
  std::span<std::uint8_t> front();
  void pop_front(std::size_t n);
  bool has_committed() const { return committed_bytes_ != 0; }

  // Bytes held: committed unsent plus the open record's reserved size.
  std::size_t size() const { return committed_bytes_ + open_size_; }

 private:
  struct Chunk {
    std::unique_ptr<std::uint8_t[]> mem;
    std::size_t begin;      // first unsent byte (offset into mem)
    std::size_t committed;  // end of committed bytes
    std::size_t end;        // end of written bytes (open record included)
  };
  Chunk new_chunk();
  void release(Chunk& c);
  std::size_t room(const Chunk& c) const;

  ChunkPool* pool_;
  std::deque<Chunk> chunks_;
  std::size_t committed_bytes_ = 0;
  std::size_t open_size_ = 0;  // 0: no open record
  std::size_t open_filled_ = 0;
};

}  // namespace relay
