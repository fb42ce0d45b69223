/*
 * dsys_wire.h — fixed headers of the dsys binary wire protocol (docs/wire.md) in C.
 *
 * All structs are packed (no padding) and every integer on the wire is little-endian: fill
 * and read fields through dsys_le64()/dsys_le32() (a no-op on little-endian hosts).
 * A 128-bit uuid is stored as two u64: `upper` = bytes 0..7 read big-endian, `lower` = bytes
 * 8..15 read big-endian (use dsys_uuid_split / dsys_uuid_join), each then stored LE.
 *
 * A frame is: the fixed header (header_length bytes, generic part included) followed by the
 * payload sections described in docs/wire.md. Headers may grow by appended fields: a reader
 * accepts header_length >= the base size and ignores unknown trailing header bytes.
 * The `_ext` structs are the current full headers of the four messages whose base layout is
 * fixed by the original design (worker_request, worker_status, file_request, file_response).
 * worker_request's base changed once, when programs became stored files: the program's file id
 * and size replaced its byte length (docs/wire.md, "Growing headers").
 */
#ifndef DSYS_WIRE_H
#define DSYS_WIRE_H

#include <stdint.h>

/* Host <-> little-endian conversion (wire order) without <endian.h> feature macros. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define dsys_le64(x) __builtin_bswap64((uint64_t)(x))
#define dsys_le32(x) __builtin_bswap32((uint32_t)(x))
#else
#define dsys_le64(x) ((uint64_t)(x))
#define dsys_le32(x) ((uint32_t)(x))
#endif

#define DSYS_PACKED __attribute__((packed))

/* ---- message_type codes (u8) ---- */
enum dsys_message_type {
  DSYS_MSG_ERROR = 1,
  DSYS_MSG_OK = 2,
  DSYS_MSG_WORKER_REQUEST = 10,
  DSYS_MSG_WORKER_REQUEST_ACK = 11,
  DSYS_MSG_WORKER_STATUS = 12,
  DSYS_MSG_WORKER_REGISTER = 13,
  DSYS_MSG_WORKER_HEARTBEAT = 14,
  DSYS_MSG_CHUNK_FINISHED = 15,
  DSYS_MSG_FILE_REQUEST = 20,
  DSYS_MSG_FILE_RESPONSE = 21,
  DSYS_MSG_FILE_PUT = 22,
  DSYS_MSG_FILE_PUT_ACK = 23,
  DSYS_MSG_FILE_STAT = 24,
  DSYS_MSG_FILE_STAT_RESPONSE = 25,
  DSYS_MSG_STORAGE_STATS_REQUEST = 26,
  DSYS_MSG_STORAGE_STATS = 27,
  DSYS_MSG_JOB_SUBMIT = 30,
  DSYS_MSG_JOB_SUBMIT_ACK = 31,
  DSYS_MSG_JOB_STATUS_REQUEST = 32,
  DSYS_MSG_JOB_STATUS_RESPONSE = 33,
  DSYS_MSG_JOB_LIST_REQUEST = 34,
  DSYS_MSG_JOB_LIST_RESPONSE = 35,
  DSYS_MSG_JOB_DISPATCH = 36,
  DSYS_MSG_JOB_REMOVE = 37,
  DSYS_MSG_JOB_CANCEL = 38,
  DSYS_MSG_NODE_LIST_REQUEST = 40,
  DSYS_MSG_NODE_LIST_RESPONSE = 41,
  DSYS_MSG_CLUSTER_CHANGE = 42,
  DSYS_MSG_CHUNK_LOG_REQUEST = 43,
  DSYS_MSG_CHUNK_LOG = 44,
  DSYS_MSG_RAFT_MESSAGE = 50,
  DSYS_MSG_BALANCER_LEASE = 60,
  DSYS_MSG_BALANCER_LEASE_REPLY = 61,
  DSYS_MSG_BALANCER_SYNC = 62,
  DSYS_MSG_BALANCER_SYNC_REPLY = 63,
  DSYS_MSG_STORAGE_HEARTBEAT = 70,
  DSYS_MSG_STORAGE_NODES_REQUEST = 71,
  DSYS_MSG_STORAGE_NODES = 72,
  DSYS_MSG_FILE_KEEP = 73,
  DSYS_MSG_FILE_LIST_REQUEST = 74,
  DSYS_MSG_FILE_LIST = 75,
  DSYS_MSG_FILE_GC = 76,
  DSYS_MSG_FILE_GC_REPLY = 77,
};

/* ---- error.code (u32) ---- */
enum dsys_error_code {
  DSYS_ERR_BAD_MESSAGE = 1,
  DSYS_ERR_UNKNOWN_TYPE = 2,
  DSYS_ERR_TOO_LARGE = 3,
  DSYS_ERR_NOT_FOUND = 4,
  DSYS_ERR_CONFLICT = 5,
  DSYS_ERR_BAD_REQUEST = 6,
  DSYS_ERR_NOT_LEADER = 7,
  DSYS_ERR_UNAVAILABLE = 8,
  DSYS_ERR_INTERNAL = 9,
  DSYS_ERR_WRONG_ROLE = 10,
  DSYS_ERR_FORBIDDEN = 11,
  DSYS_ERR_NO_SPACE = 12,
};

/* ---- chunk / job state (u8) ---- */
enum dsys_state {
  DSYS_STATE_QUEUED = 0,
  DSYS_STATE_RUNNING = 1,
  DSYS_STATE_SUCCEEDED = 2,
  DSYS_STATE_FAILED = 3,
  DSYS_STATE_LOST = 4,
};

/* ---- failure codes (u32) ---- */
enum dsys_failure {
  DSYS_FAIL_NONE = 0,
  DSYS_FAIL_EXIT_CODE = 1,
  DSYS_FAIL_SIGNAL = 2,
  DSYS_FAIL_TIMEOUT = 3,
  DSYS_FAIL_SPAWN_FAILED = 4,
  DSYS_FAIL_INPUT_UNAVAILABLE = 5,
  DSYS_FAIL_OUTPUT_FAILED = 6,
  DSYS_FAIL_WORKER_LOST = 7,
  DSYS_FAIL_INTERNAL = 8,
  DSYS_FAIL_OOM = 9,           /* over its memory limit: the kernel OOM-killed a process */
  DSYS_FAIL_PIDS = 10,         /* over its process limit: the kernel refused a fork */
  DSYS_FAIL_OUTPUT_QUOTA = 11, /* filled its disk limit (outputs, tmp, stdout, stderr) */
  DSYS_FAIL_CPU_TIME = 12,     /* over its CPU time limit */
  DSYS_FAIL_POLICY = 13,       /* asks for more than the worker allows */
};

/* ---- node roles / states / flags (u8) ---- */
enum dsys_node_role {
  DSYS_ROLE_MASTER = 1,
  DSYS_ROLE_BALANCER = 2,
  DSYS_ROLE_STORAGE = 3,
  DSYS_ROLE_WORKER = 4,
  DSYS_ROLE_CLIENT = 5,
};
enum dsys_node_state { DSYS_NODE_ALIVE = 0, DSYS_NODE_SUSPECT = 1, DSYS_NODE_DEAD = 2 };
#define DSYS_NODE_FLAG_LEADER 1u
#define DSYS_FILE_PUT_LAST 1u

/* ---- generic header and the base structs fixed by the design ---- */
struct DSYS_PACKED dsys_generic_message {
  uint8_t message_type;
  uint64_t node_uuid_upper;
  uint64_t node_uuid_lower;
  uint64_t header_length;
};
struct DSYS_PACKED dsys_worker_request {
  struct dsys_generic_message header;
  uint64_t job_uuid_upper;
  uint64_t job_uuid_lower;
  uint64_t program_uuid_upper;
  uint64_t program_uuid_lower;
  uint64_t program_size;
  uint64_t num_input_files;
};
struct DSYS_PACKED dsys_worker_status {
  struct dsys_generic_message header;
  uint64_t job_uuid_upper;
  uint64_t job_uuid_lower;
  uint8_t state;
};
struct DSYS_PACKED dsys_file_request {
  struct dsys_generic_message header;
  uint64_t file_uuid_upper;
  uint64_t file_uuid_lower;
};
struct DSYS_PACKED dsys_file_response {
  struct dsys_generic_message header;
  uint64_t file_uuid_upper;
  uint64_t file_uuid_lower;
  uint64_t file_length;
};

/* ---- current full headers of those four (base + appended fields) ---- */
struct DSYS_PACKED dsys_worker_request_ext {
  struct dsys_worker_request base;
  uint32_t chunk_index;
  uint32_t num_chunks;
  uint64_t argument_length;
  uint64_t time_limit_ms;
  uint32_t attempt;
  uint64_t cap_expiry_ms;
  uint32_t caps_length;
  uint32_t ticket_length;
  uint32_t owner_length;
  uint32_t program_cap_length;
  uint64_t balancer_epoch;
  uint64_t memory_bytes; /* chunk limits: 0 = the worker's default */
  uint32_t max_procs;
  uint64_t cpu_time_ms;
  uint64_t disk_bytes;
  uint8_t network; /* 0 = loopback only, 1 = host network */
}; /* payload: input_files (file_entry*), argument, caps, ticket, owner, program_cap */
struct DSYS_PACKED dsys_worker_status_ext {
  struct dsys_worker_status base;
  uint32_t chunk_index;
  uint32_t attempt;
  int32_t exit_code;
  uint32_t signal;
  uint32_t failure;
  uint64_t duration_ms;
  uint32_t num_outputs;
  uint32_t stderr_length;
  uint32_t reason_length;
  uint32_t ticket_length;
}; /* payload: outputs (file_entry*), stderr_tail, reason, ticket */
struct DSYS_PACKED dsys_file_request_ext {
  struct dsys_file_request base;
  uint64_t offset;
  uint64_t max_length;
  uint64_t cap_expiry_ms;
  uint32_t cap_length;
}; /* payload: cap */
struct DSYS_PACKED dsys_file_response_ext {
  struct dsys_file_response base;
  uint64_t offset;
}; /* payload: file bytes = rest of the frame */

/* ---- other messages ---- */
struct DSYS_PACKED dsys_error {
  struct dsys_generic_message header;
  uint32_t code;
  uint32_t text_length;
  uint64_t value; /* appended: WRONG_OFFSET's resume offset (absent in 33-byte headers: 0) */
}; /* payload: text */
struct DSYS_PACKED dsys_ok {
  struct dsys_generic_message header;
  uint64_t value;
};
struct DSYS_PACKED dsys_worker_request_ack {
  struct dsys_generic_message header;
  uint64_t job_uuid_upper;
  uint64_t job_uuid_lower;
  uint32_t chunk_index;
  uint32_t attempt;
  uint8_t accepted;
  uint32_t reason_length;
}; /* payload: reason */
struct DSYS_PACKED dsys_worker_register {
  struct dsys_generic_message header;
  uint32_t slots;
  uint32_t free_slots;
  uint32_t num_files;
  uint32_t label_length;
  uint32_t endpoint_length; /* extension: where it serves chunk logs */
}; /* payload: files (16-byte ids), label, endpoint */
struct DSYS_PACKED dsys_worker_heartbeat {
  struct dsys_generic_message header;
  uint32_t slots;
  uint32_t free_slots;
  uint32_t num_added;
  uint32_t num_evicted;
}; /* payload: added ids, evicted ids */
struct DSYS_PACKED dsys_chunk_finished {
  struct dsys_generic_message header;
  uint64_t job_uuid_upper;
  uint64_t job_uuid_lower;
  uint32_t chunk_index;
  uint32_t attempt;
  uint8_t state;
};
struct DSYS_PACKED dsys_file_put {
  struct dsys_generic_message header;
  uint64_t file_uuid_upper;
  uint64_t file_uuid_lower;
  uint64_t total_length;
  uint64_t offset;
  uint32_t flags;
  uint32_t owner_length; /* extension: may be absent (base 61 bytes) */
  uint8_t replicas;      /* extension: replicas wanted, 0 = the cluster default */
}; /* payload: owner, then file bytes = rest of the frame */
struct DSYS_PACKED dsys_file_put_ack {
  struct dsys_generic_message header;
  uint64_t file_uuid_upper;
  uint64_t file_uuid_lower;
  uint64_t durable_length;
  uint8_t committed;
};
struct DSYS_PACKED dsys_file_stat {
  struct dsys_generic_message header;
  uint64_t file_uuid_upper;
  uint64_t file_uuid_lower;
  uint32_t user_length; /* extension: may be absent (base 41 bytes) */
}; /* payload: user */
struct DSYS_PACKED dsys_file_stat_response {
  struct dsys_generic_message header;
  uint64_t file_uuid_upper;
  uint64_t file_uuid_lower;
  uint8_t exists;
  uint64_t length;
};
struct DSYS_PACKED dsys_storage_stats_request {
  struct dsys_generic_message header;
};
struct DSYS_PACKED dsys_storage_stats {
  struct dsys_generic_message header;
  uint64_t gets;
  uint64_t get_bytes;
  uint64_t puts;
  uint64_t put_bytes;
  uint64_t files;
  uint64_t stored_bytes;
  uint32_t num_fetch_counts;
}; /* payload: fetch_count* */
struct DSYS_PACKED dsys_job_submit {
  struct dsys_generic_message header;
  uint64_t client_uuid_upper;
  uint64_t client_uuid_lower;
  uint64_t sequence;
  uint32_t num_chunks;
  uint64_t time_limit_ms;
  uint64_t program_uuid_upper;
  uint64_t program_uuid_lower;
  uint64_t program_size;
  uint64_t argument_length;
  uint32_t num_input_files;
  uint32_t name_length;
  uint64_t memory_bytes; /* extension (base 101 bytes): chunk limits, 0 = the worker's default */
  uint32_t max_procs;
  uint64_t cpu_time_ms;
  uint64_t disk_bytes;
  uint8_t network; /* 0 = loopback only, 1 = host network */
  uint32_t retries; /* extension: times a failed chunk runs again */
  uint32_t max_failed_chunks; /* extension: stop the job after this many failed, 0 = never */
}; /* payload: argument, input_files (file_entry*), program_name */
struct DSYS_PACKED dsys_job_submit_ack {
  struct dsys_generic_message header;
  uint64_t job_uuid_upper;
  uint64_t job_uuid_lower;
  uint64_t sequence;
  uint8_t duplicate;
};
struct DSYS_PACKED dsys_job_status_request {
  struct dsys_generic_message header;
  uint64_t job_uuid_upper;
  uint64_t job_uuid_lower;
};
struct DSYS_PACKED dsys_job_status_response {
  struct dsys_generic_message header;
  uint64_t job_uuid_upper;
  uint64_t job_uuid_lower;
  uint8_t state;
  uint32_t num_chunks;
  uint32_t done;
  uint32_t failed;
  uint32_t running;
  uint32_t queued;
  uint32_t num_records;
}; /* payload: chunk_record* */
struct DSYS_PACKED dsys_job_list_request {
  struct dsys_generic_message header;
};
struct DSYS_PACKED dsys_job_list_response {
  struct dsys_generic_message header;
  uint32_t num_jobs;
}; /* payload: job_list_entry* */
struct DSYS_PACKED dsys_job_dispatch {
  struct dsys_generic_message header;
  uint64_t job_uuid_upper;
  uint64_t job_uuid_lower;
  uint32_t num_chunks;
  uint64_t time_limit_ms;
  uint64_t program_uuid_upper;
  uint64_t program_uuid_lower;
  uint64_t program_size;
  uint64_t argument_length;
  uint32_t num_input_files;
  uint32_t num_dispatch;
  uint32_t owner_length; /* extension: may be absent (base 93 bytes) */
  uint64_t memory_bytes; /* extension: chunk limits, 0 = the worker's default */
  uint32_t max_procs;
  uint64_t cpu_time_ms;
  uint64_t disk_bytes;
  uint8_t network; /* 0 = loopback only, 1 = host network */
}; /* payload: argument, input_files (file_entry*), chunks (chunk_attempt*), owner */
struct DSYS_PACKED dsys_chunk_log_request {
  struct dsys_generic_message header;
  uint64_t job_uuid_upper;
  uint64_t job_uuid_lower;
  uint32_t chunk_index;
  uint8_t stream;
  uint64_t offset;
  uint32_t max_length;
};
struct DSYS_PACKED dsys_chunk_log {
  struct dsys_generic_message header;
  uint64_t job_uuid_upper;
  uint64_t job_uuid_lower;
  uint32_t chunk_index;
  uint32_t attempt;
  uint64_t offset;
  uint64_t total_length;
  uint8_t running;
  uint32_t data_length;
}; /* payload: data */
struct DSYS_PACKED dsys_job_cancel {
  struct dsys_generic_message header;
  uint64_t job_uuid_upper;
  uint64_t job_uuid_lower;
  uint32_t num_chunks;
}; /* payload: chunks (chunk_index_entry*) */
struct DSYS_PACKED dsys_job_remove {
  struct dsys_generic_message header;
  uint64_t job_uuid_upper;
  uint64_t job_uuid_lower;
};
struct DSYS_PACKED dsys_node_list_request {
  struct dsys_generic_message header;
};
struct DSYS_PACKED dsys_node_list_response {
  struct dsys_generic_message header;
  uint32_t num_nodes;
}; /* payload: node_entry* */
struct DSYS_PACKED dsys_cluster_change {
  struct dsys_generic_message header;
  uint8_t op;
  uint32_t member_length;
}; /* payload: member (UTF-8) */
struct DSYS_PACKED dsys_raft_message {
  struct dsys_generic_message header;
}; /* payload: opaque raft bytes = rest of the frame */
struct DSYS_PACKED dsys_balancer_lease {
  struct dsys_generic_message header;
  uint64_t epoch;
  uint32_t endpoint_length;
}; /* payload: endpoint (UTF-8) */
struct DSYS_PACKED dsys_balancer_lease_reply {
  struct dsys_generic_message header;
  uint64_t epoch;
  uint64_t holder_uuid_upper;
  uint64_t holder_uuid_lower;
  uint32_t duration_ms;
  uint8_t granted;
  uint32_t endpoint_length;
}; /* payload: endpoint (UTF-8) */
struct DSYS_PACKED dsys_balancer_sync {
  struct dsys_generic_message header;
  uint64_t stream_uuid_upper;
  uint64_t stream_uuid_lower;
  uint64_t after;
  uint32_t wait_ms;
};
struct DSYS_PACKED dsys_balancer_sync_reply {
  struct dsys_generic_message header;
  uint64_t stream_uuid_upper;
  uint64_t stream_uuid_lower;
  uint64_t first_seq;
  uint8_t snapshot;
  uint32_t body_length;
}; /* payload: body (JSON, balancer-internal) */
struct DSYS_PACKED dsys_storage_heartbeat {
  struct dsys_generic_message header;
  uint8_t flags;
  uint64_t capacity_bytes;
  uint64_t used_bytes;
  uint64_t files;
  uint64_t under_replicated_files;
  uint64_t under_replicated_bytes;
  uint32_t endpoint_length;
  uint32_t detail_length;
}; /* payload: endpoint, detail (UTF-8) */
struct DSYS_PACKED dsys_storage_nodes_request {
  struct dsys_generic_message header;
};
struct DSYS_PACKED dsys_storage_nodes {
  struct dsys_generic_message header;
  uint8_t replicas;
  uint64_t repair_after_ms;
  uint32_t num_nodes;
}; /* payload: storage_entry* */
struct DSYS_PACKED dsys_file_keep {
  struct dsys_generic_message header;
  uint8_t op;
  uint8_t replicas;
  uint32_t num_files;
}; /* payload: file_entry* */
struct DSYS_PACKED dsys_file_list_request {
  struct dsys_generic_message header;
};
struct DSYS_PACKED dsys_file_list {
  struct dsys_generic_message header;
  uint32_t num_files;
}; /* payload: kept_file* */
struct DSYS_PACKED dsys_file_gc {
  struct dsys_generic_message header;
  uint32_t num_files;
}; /* payload: gc_entry* */
struct DSYS_PACKED dsys_file_gc_reply {
  struct dsys_generic_message header;
  uint64_t grace_ms;
  uint32_t num_ids;
}; /* payload: num_ids x 16-byte file ids */

/* ---- payload records (fixed part; variable parts follow each record) ---- */
struct DSYS_PACKED dsys_file_entry {
  uint64_t file_uuid_upper;
  uint64_t file_uuid_lower;
  uint64_t size;
  uint32_t name_length;
}; /* followed by name */
struct DSYS_PACKED dsys_chunk_attempt {
  uint32_t chunk_index;
  uint32_t attempt;
};
struct DSYS_PACKED dsys_chunk_record {
  uint32_t chunk_index;
  uint8_t state;
  uint32_t attempt;
  int32_t exit_code;
  uint32_t signal;
  uint32_t failure;
  uint64_t duration_ms;
  uint32_t num_outputs;
  uint32_t stderr_length;
  uint32_t reason_length;
  uint64_t retry_at_ms;
  uint64_t worker_uuid_upper;
  uint64_t worker_uuid_lower;
  uint32_t num_history;
}; /* followed by outputs (file_entry*), stderr_tail, reason, history (attempt_record*) */
struct DSYS_PACKED dsys_attempt_record {
  uint32_t attempt;
  uint8_t state;
  int32_t exit_code;
  uint32_t signal;
  uint32_t failure;
  uint64_t duration_ms;
  uint64_t at_ms;
  uint32_t reason_length;
}; /* followed by reason */
struct DSYS_PACKED dsys_chunk_index_entry {
  uint32_t chunk_index;
};
struct DSYS_PACKED dsys_job_list_entry {
  uint64_t job_uuid_upper;
  uint64_t job_uuid_lower;
  uint8_t state;
  uint32_t num_chunks;
};
struct DSYS_PACKED dsys_node_entry {
  uint64_t node_uuid_upper;
  uint64_t node_uuid_lower;
  uint8_t role;
  uint8_t state;
  uint8_t flags;
  uint32_t slots;
  uint32_t free_slots;
  uint64_t last_seen_ms;
  uint32_t endpoint_length;
  uint32_t name_length;
  uint32_t detail_length;
}; /* followed by endpoint, name, detail */
struct DSYS_PACKED dsys_storage_entry {
  uint64_t node_uuid_upper;
  uint64_t node_uuid_lower;
  uint8_t state;
  uint8_t flags;
  uint64_t capacity_bytes;
  uint64_t used_bytes;
  uint64_t files;
  uint64_t under_replicated_files;
  uint64_t under_replicated_bytes;
  uint64_t last_seen_ms;
  uint32_t endpoint_length;
  uint32_t detail_length;
}; /* followed by endpoint, detail */
struct DSYS_PACKED dsys_kept_file {
  uint64_t file_uuid_upper;
  uint64_t file_uuid_lower;
  uint64_t size;
  uint8_t replicas;
  uint32_t refs;
  uint64_t kept_at_ms;
  uint32_t name_length;
}; /* followed by name */
struct DSYS_PACKED dsys_gc_entry {
  uint64_t file_uuid_upper;
  uint64_t file_uuid_lower;
  uint64_t age_ms;
};
struct DSYS_PACKED dsys_fetch_count {
  uint64_t file_uuid_upper;
  uint64_t file_uuid_lower;
  uint64_t count;
};

/* Sizes are part of the protocol: a change here is a wire-format change. */
_Static_assert(sizeof(struct dsys_generic_message) == 25, "generic_message");
_Static_assert(sizeof(struct dsys_worker_request) == 73, "worker_request base");
_Static_assert(sizeof(struct dsys_worker_status) == 42, "worker_status base");
_Static_assert(sizeof(struct dsys_file_request) == 41, "file_request base");
_Static_assert(sizeof(struct dsys_file_response) == 49, "file_response base");
_Static_assert(sizeof(struct dsys_worker_request_ext) == 162, "worker_request");
_Static_assert(sizeof(struct dsys_worker_status_ext) == 86, "worker_status");
_Static_assert(sizeof(struct dsys_file_request_ext) == 69, "file_request");
_Static_assert(sizeof(struct dsys_file_response_ext) == 57, "file_response");
_Static_assert(sizeof(struct dsys_error) == 41, "error");
_Static_assert(sizeof(struct dsys_ok) == 33, "ok");
_Static_assert(sizeof(struct dsys_worker_request_ack) == 54, "worker_request_ack");
_Static_assert(sizeof(struct dsys_worker_register) == 45, "worker_register");
_Static_assert(sizeof(struct dsys_worker_heartbeat) == 41, "worker_heartbeat");
_Static_assert(sizeof(struct dsys_chunk_finished) == 50, "chunk_finished");
_Static_assert(sizeof(struct dsys_file_put) == 66, "file_put");
_Static_assert(sizeof(struct dsys_file_put_ack) == 50, "file_put_ack");
_Static_assert(sizeof(struct dsys_file_stat) == 45, "file_stat");
_Static_assert(sizeof(struct dsys_file_stat_response) == 50, "file_stat_response");
_Static_assert(sizeof(struct dsys_storage_stats_request) == 25, "storage_stats_request");
_Static_assert(sizeof(struct dsys_storage_stats) == 77, "storage_stats");
_Static_assert(sizeof(struct dsys_job_submit) == 138, "job_submit");
_Static_assert(sizeof(struct dsys_job_submit_ack) == 50, "job_submit_ack");
_Static_assert(sizeof(struct dsys_job_status_request) == 41, "job_status_request");
_Static_assert(sizeof(struct dsys_job_status_response) == 66, "job_status_response");
_Static_assert(sizeof(struct dsys_job_list_request) == 25, "job_list_request");
_Static_assert(sizeof(struct dsys_job_list_response) == 29, "job_list_response");
_Static_assert(sizeof(struct dsys_job_dispatch) == 126, "job_dispatch");
_Static_assert(sizeof(struct dsys_job_remove) == 41, "job_remove");
_Static_assert(sizeof(struct dsys_job_cancel) == 45, "job_cancel");
_Static_assert(sizeof(struct dsys_chunk_log_request) == 58, "chunk_log_request");
_Static_assert(sizeof(struct dsys_chunk_log) == 70, "chunk_log");
_Static_assert(sizeof(struct dsys_node_list_request) == 25, "node_list_request");
_Static_assert(sizeof(struct dsys_node_list_response) == 29, "node_list_response");
_Static_assert(sizeof(struct dsys_cluster_change) == 30, "cluster_change");
_Static_assert(sizeof(struct dsys_raft_message) == 25, "raft_message");
_Static_assert(sizeof(struct dsys_balancer_lease) == 37, "balancer_lease");
_Static_assert(sizeof(struct dsys_balancer_lease_reply) == 58, "balancer_lease_reply");
_Static_assert(sizeof(struct dsys_balancer_sync) == 53, "balancer_sync");
_Static_assert(sizeof(struct dsys_balancer_sync_reply) == 54, "balancer_sync_reply");
_Static_assert(sizeof(struct dsys_storage_heartbeat) == 74, "storage_heartbeat");
_Static_assert(sizeof(struct dsys_storage_nodes_request) == 25, "storage_nodes_request");
_Static_assert(sizeof(struct dsys_storage_nodes) == 38, "storage_nodes");
_Static_assert(sizeof(struct dsys_file_keep) == 31, "file_keep");
_Static_assert(sizeof(struct dsys_file_list_request) == 25, "file_list_request");
_Static_assert(sizeof(struct dsys_file_list) == 29, "file_list");
_Static_assert(sizeof(struct dsys_file_gc) == 29, "file_gc");
_Static_assert(sizeof(struct dsys_file_gc_reply) == 37, "file_gc_reply");
_Static_assert(sizeof(struct dsys_file_entry) == 28, "file_entry");
_Static_assert(sizeof(struct dsys_chunk_attempt) == 8, "chunk_attempt");
_Static_assert(sizeof(struct dsys_chunk_record) == 69, "chunk_record");
_Static_assert(sizeof(struct dsys_attempt_record) == 37, "attempt_record");
_Static_assert(sizeof(struct dsys_chunk_index_entry) == 4, "chunk_index_entry");
_Static_assert(sizeof(struct dsys_job_list_entry) == 21, "job_list_entry");
_Static_assert(sizeof(struct dsys_node_entry) == 47, "node_entry");
_Static_assert(sizeof(struct dsys_fetch_count) == 24, "fetch_count");
_Static_assert(sizeof(struct dsys_storage_entry) == 74, "storage_entry");
_Static_assert(sizeof(struct dsys_kept_file) == 41, "kept_file");
_Static_assert(sizeof(struct dsys_gc_entry) == 24, "gc_entry");

/* Splits a 16-byte uuid into host-order upper/lower halves (each = 8 bytes read big-endian). */
static inline void dsys_uuid_split(const uint8_t id[16], uint64_t *upper, uint64_t *lower) {
  uint64_t u = 0, l = 0;
  for (int i = 0; i < 8; i++) {
    u = (u << 8) | id[i];
    l = (l << 8) | id[8 + i];
  }
  *upper = u;
  *lower = l;
}

/* Inverse of dsys_uuid_split. */
static inline void dsys_uuid_join(uint64_t upper, uint64_t lower, uint8_t id[16]) {
  for (int i = 7; i >= 0; i--) {
    id[i] = (uint8_t)upper;
    id[8 + i] = (uint8_t)lower;
    upper >>= 8;
    lower >>= 8;
  }
}

/* Fills a generic header; `header_length` is the sizeof the full fixed header being sent. */
static inline void dsys_header_init(struct dsys_generic_message *h, uint8_t type,
                                    const uint8_t node[16], uint64_t header_length) {
  uint64_t u, l;
  dsys_uuid_split(node, &u, &l);
  h->message_type = type;
  h->node_uuid_upper = dsys_le64(u);
  h->node_uuid_lower = dsys_le64(l);
  h->header_length = dsys_le64(header_length);
}

#endif /* DSYS_WIRE_H */
