// Ranges of a kernel file's __device__ pool, per stream. First for counters of kernels whose last
// block to arrive does a final step (the attention decode's merge of its splits, in the decode
// grid instead of a second launch); also for temporaries under capture (stream_scratch's
// CapturePool: the calls of one stream follow each other, so they share a range as counters do).
// Pool names (pool_id): ArrivalPool below.
//
// Counters: each block of a group adds one to the group's counter; the block that brings it to
// the group's size gets the step, and its atomicInc wraps the counter back to 0. So every counter
// is 0 before and after each launch, and a kernel file's zero-initialised __device__ pool serves
// launch after launch without a memset (a memset, or a second kernel, is a serial step of the
// graph: the cost the counters avoid).
//
// Two launches that may run at the same time must not share a counter. What this hands out is
// one range per (device, stream) eagerly, the stream known by its process-unique id (a destroyed
// stream's work may still run when a new stream gets its handle; each thread's
// cudaStreamPerThread has its own id), and per (capture, stream handle) under capture, grown as
// needed (a range outgrown is abandoned, not handed out again while a launch may still run on
// it: eagerly never, under capture once the graph is gone, below): launches on one stream follow each other, eagerly and as the nodes of
// one captured stream in every replay. Graphs may replay beside each other and beside eager work,
// so a capture's ranges are its own while its graph lives. A graph exec replays in order with
// itself. Not covered: a clone of a graph, or a second exec of one, replayed beside it (the decode
// graphs hold no stream-ordered allocation, which would limit a graph to one exec), and captured
// nodes whose stream order cudaStreamUpdateCaptureDependencies removed.
// A capture's ranges (as many units as its largest launch needs, on each of its streams) are given
// back when its graph is gone: a user object on the graph (cudaGraphRetainUserObject) whose
// destructor CUDA runs once the graph, its clones and execs are destroyed and their launches are
// complete. Before that, a pool of 8 MiB of attention partials held some 30 captures of one
// decode at batch 1 for the process, and every capture past them took stream-ordered scratch
// (memory nodes, which cut the programmatic edges between calls). Graphs kept alive still keep
// theirs; eager ranges stay with their stream for the process. No range (-1) once the pool is
// spent, and where the capture status or the stream's id cannot be told: the caller then takes
// its path without the pool.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace loraops::cuda {

// The pools' names, unique in the process.
enum ArrivalPool : int {
  kAttentionDecodeCounters = 0,  // attention_decode.cu's merge counters
  kLoraDecodeT = 1,              // lora_decode.cu's t under capture (stream_scratch)
  kAttentionDecodePartials = 2,  // attention_decode.cu's partials under capture (stream_scratch)
};

// The first of `count` counters for a launch on `stream` of `device`, as an index into a pool of
// `pool_size` (one per kernel file: `pool_id` names it), or -1.
int64_t arrival_slots(int pool_id, int64_t pool_size, int device, cudaStream_t stream, int64_t count);

// The units of a pool handed out now, on `device` (for tests: a destroyed capture's come back).
int64_t arrival_slots_in_use(int pool_id, int device);

}  // namespace loraops::cuda
