/*
 * test_vectors — independent C encoder of dsys fixed headers, used by tests/wire_c_test.ts to
 * check that wire/dsys_wire.h and the TypeScript encoder agree byte for byte.
 *
 *   test_vectors sizes      prints "<struct> <sizeof>" for every struct of dsys_wire.h
 *   test_vectors            reads lines "<message> <node_hex32> <field values...>" on stdin
 *                           (values in header order, uuids as 32 hex digits) and prints the
 *                           hex of the filled struct, one line per input line.
 *
 * Fields are written through the struct members' real offsets (offsetof), so a wrong member
 * order, size or missing packing in the header shows up as a byte mismatch.
 */
#define _POSIX_C_SOURCE 200809L
#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dsys_wire.h"

enum kind { K_U8, K_U32, K_I32, K_U64, K_UUID };

struct field {
  size_t off;  /* offset of the member (uuid: of the _upper member) */
  size_t size; /* sizeof the member, checked against the kind */
  enum kind kind;
  size_t off2; /* uuid: offset of the _lower member */
};

#define MAXF 24
struct msg {
  const char *name;
  uint8_t type;
  size_t size;
  struct field fields[MAXF];
};

#define SZ(T, m) sizeof(((T *)0)->m)
#define F(T, m, k) {offsetof(T, m), SZ(T, m), k, 0}
#define U(T, m) {offsetof(T, m##_upper), SZ(T, m##_upper), K_UUID, offsetof(T, m##_lower)}
#define END {0, 0, K_U8, 1} /* off2 = 1 marks the end */

#define WR struct dsys_worker_request_ext
#define WS struct dsys_worker_status_ext
#define FQ struct dsys_file_request_ext
#define FR struct dsys_file_response_ext

static const struct msg MSGS[] = {
    {"error", DSYS_MSG_ERROR, sizeof(struct dsys_error),
     {F(struct dsys_error, code, K_U32), F(struct dsys_error, text_length, K_U32),
      F(struct dsys_error, value, K_U64), END}},
    {"ok", DSYS_MSG_OK, sizeof(struct dsys_ok), {F(struct dsys_ok, value, K_U64), END}},
    {"worker_request", DSYS_MSG_WORKER_REQUEST, sizeof(WR),
     {U(WR, base.job_uuid), U(WR, base.program_uuid), F(WR, base.program_size, K_U64),
      F(WR, base.num_input_files, K_U64), F(WR, chunk_index, K_U32), F(WR, num_chunks, K_U32),
      F(WR, argument_length, K_U64), F(WR, time_limit_ms, K_U64), F(WR, attempt, K_U32),
      F(WR, cap_expiry_ms, K_U64), F(WR, caps_length, K_U32), F(WR, ticket_length, K_U32),
      F(WR, owner_length, K_U32), F(WR, program_cap_length, K_U32),
      F(WR, balancer_epoch, K_U64), F(WR, memory_bytes, K_U64), F(WR, max_procs, K_U32),
      F(WR, cpu_time_ms, K_U64), F(WR, disk_bytes, K_U64), F(WR, network, K_U8), END}},
    {"worker_request_ack", DSYS_MSG_WORKER_REQUEST_ACK, sizeof(struct dsys_worker_request_ack),
     {U(struct dsys_worker_request_ack, job_uuid),
      F(struct dsys_worker_request_ack, chunk_index, K_U32),
      F(struct dsys_worker_request_ack, attempt, K_U32),
      F(struct dsys_worker_request_ack, accepted, K_U8),
      F(struct dsys_worker_request_ack, reason_length, K_U32), END}},
    {"worker_status", DSYS_MSG_WORKER_STATUS, sizeof(WS),
     {U(WS, base.job_uuid), F(WS, base.state, K_U8), F(WS, chunk_index, K_U32),
      F(WS, attempt, K_U32), F(WS, exit_code, K_I32), F(WS, signal, K_U32),
      F(WS, failure, K_U32), F(WS, duration_ms, K_U64), F(WS, num_outputs, K_U32),
      F(WS, stderr_length, K_U32), F(WS, reason_length, K_U32), F(WS, ticket_length, K_U32),
      END}},
    {"worker_register", DSYS_MSG_WORKER_REGISTER, sizeof(struct dsys_worker_register),
     {F(struct dsys_worker_register, slots, K_U32),
      F(struct dsys_worker_register, free_slots, K_U32),
      F(struct dsys_worker_register, num_files, K_U32),
      F(struct dsys_worker_register, label_length, K_U32),
      F(struct dsys_worker_register, endpoint_length, K_U32), END}},
    {"worker_heartbeat", DSYS_MSG_WORKER_HEARTBEAT, sizeof(struct dsys_worker_heartbeat),
     {F(struct dsys_worker_heartbeat, slots, K_U32),
      F(struct dsys_worker_heartbeat, free_slots, K_U32),
      F(struct dsys_worker_heartbeat, num_added, K_U32),
      F(struct dsys_worker_heartbeat, num_evicted, K_U32), END}},
    {"chunk_finished", DSYS_MSG_CHUNK_FINISHED, sizeof(struct dsys_chunk_finished),
     {U(struct dsys_chunk_finished, job_uuid), F(struct dsys_chunk_finished, chunk_index, K_U32),
      F(struct dsys_chunk_finished, attempt, K_U32), F(struct dsys_chunk_finished, state, K_U8),
      END}},
    {"file_request", DSYS_MSG_FILE_REQUEST, sizeof(FQ),
     {U(FQ, base.file_uuid), F(FQ, offset, K_U64), F(FQ, max_length, K_U64),
      F(FQ, cap_expiry_ms, K_U64), F(FQ, cap_length, K_U32), END}},
    {"file_response", DSYS_MSG_FILE_RESPONSE, sizeof(FR),
     {U(FR, base.file_uuid), F(FR, base.file_length, K_U64), F(FR, offset, K_U64), END}},
    {"file_put", DSYS_MSG_FILE_PUT, sizeof(struct dsys_file_put),
     {U(struct dsys_file_put, file_uuid), F(struct dsys_file_put, total_length, K_U64),
      F(struct dsys_file_put, offset, K_U64), F(struct dsys_file_put, flags, K_U32),
      F(struct dsys_file_put, owner_length, K_U32), F(struct dsys_file_put, replicas, K_U8),
      END}},
    {"file_put_ack", DSYS_MSG_FILE_PUT_ACK, sizeof(struct dsys_file_put_ack),
     {U(struct dsys_file_put_ack, file_uuid), F(struct dsys_file_put_ack, durable_length, K_U64),
      F(struct dsys_file_put_ack, committed, K_U8), END}},
    {"file_stat", DSYS_MSG_FILE_STAT, sizeof(struct dsys_file_stat),
     {U(struct dsys_file_stat, file_uuid), F(struct dsys_file_stat, user_length, K_U32), END}},
    {"file_stat_response", DSYS_MSG_FILE_STAT_RESPONSE, sizeof(struct dsys_file_stat_response),
     {U(struct dsys_file_stat_response, file_uuid),
      F(struct dsys_file_stat_response, exists, K_U8),
      F(struct dsys_file_stat_response, length, K_U64), END}},
    {"storage_stats_request", DSYS_MSG_STORAGE_STATS_REQUEST,
     sizeof(struct dsys_storage_stats_request), {END}},
    {"storage_stats", DSYS_MSG_STORAGE_STATS, sizeof(struct dsys_storage_stats),
     {F(struct dsys_storage_stats, gets, K_U64), F(struct dsys_storage_stats, get_bytes, K_U64),
      F(struct dsys_storage_stats, puts, K_U64), F(struct dsys_storage_stats, put_bytes, K_U64),
      F(struct dsys_storage_stats, files, K_U64),
      F(struct dsys_storage_stats, stored_bytes, K_U64),
      F(struct dsys_storage_stats, num_fetch_counts, K_U32), END}},
    {"job_submit", DSYS_MSG_JOB_SUBMIT, sizeof(struct dsys_job_submit),
     {U(struct dsys_job_submit, client_uuid), F(struct dsys_job_submit, sequence, K_U64),
      F(struct dsys_job_submit, num_chunks, K_U32),
      F(struct dsys_job_submit, time_limit_ms, K_U64),
      U(struct dsys_job_submit, program_uuid), F(struct dsys_job_submit, program_size, K_U64),
      F(struct dsys_job_submit, argument_length, K_U64),
      F(struct dsys_job_submit, num_input_files, K_U32),
      F(struct dsys_job_submit, name_length, K_U32),
      F(struct dsys_job_submit, memory_bytes, K_U64), F(struct dsys_job_submit, max_procs, K_U32),
      F(struct dsys_job_submit, cpu_time_ms, K_U64), F(struct dsys_job_submit, disk_bytes, K_U64),
      F(struct dsys_job_submit, network, K_U8), F(struct dsys_job_submit, retries, K_U32),
      F(struct dsys_job_submit, max_failed_chunks, K_U32), END}},
    {"job_submit_ack", DSYS_MSG_JOB_SUBMIT_ACK, sizeof(struct dsys_job_submit_ack),
     {U(struct dsys_job_submit_ack, job_uuid), F(struct dsys_job_submit_ack, sequence, K_U64),
      F(struct dsys_job_submit_ack, duplicate, K_U8), END}},
    {"job_status_request", DSYS_MSG_JOB_STATUS_REQUEST, sizeof(struct dsys_job_status_request),
     {U(struct dsys_job_status_request, job_uuid), END}},
    {"job_status_response", DSYS_MSG_JOB_STATUS_RESPONSE,
     sizeof(struct dsys_job_status_response),
     {U(struct dsys_job_status_response, job_uuid),
      F(struct dsys_job_status_response, state, K_U8),
      F(struct dsys_job_status_response, num_chunks, K_U32),
      F(struct dsys_job_status_response, done, K_U32),
      F(struct dsys_job_status_response, failed, K_U32),
      F(struct dsys_job_status_response, running, K_U32),
      F(struct dsys_job_status_response, queued, K_U32),
      F(struct dsys_job_status_response, num_records, K_U32), END}},
    {"job_list_request", DSYS_MSG_JOB_LIST_REQUEST, sizeof(struct dsys_job_list_request), {END}},
    {"job_list_response", DSYS_MSG_JOB_LIST_RESPONSE, sizeof(struct dsys_job_list_response),
     {F(struct dsys_job_list_response, num_jobs, K_U32), END}},
    {"job_dispatch", DSYS_MSG_JOB_DISPATCH, sizeof(struct dsys_job_dispatch),
     {U(struct dsys_job_dispatch, job_uuid), F(struct dsys_job_dispatch, num_chunks, K_U32),
      F(struct dsys_job_dispatch, time_limit_ms, K_U64),
      U(struct dsys_job_dispatch, program_uuid),
      F(struct dsys_job_dispatch, program_size, K_U64),
      F(struct dsys_job_dispatch, argument_length, K_U64),
      F(struct dsys_job_dispatch, num_input_files, K_U32),
      F(struct dsys_job_dispatch, num_dispatch, K_U32),
      F(struct dsys_job_dispatch, owner_length, K_U32),
      F(struct dsys_job_dispatch, memory_bytes, K_U64),
      F(struct dsys_job_dispatch, max_procs, K_U32),
      F(struct dsys_job_dispatch, cpu_time_ms, K_U64),
      F(struct dsys_job_dispatch, disk_bytes, K_U64), F(struct dsys_job_dispatch, network, K_U8),
      END}},
    {"job_remove", DSYS_MSG_JOB_REMOVE, sizeof(struct dsys_job_remove),
     {U(struct dsys_job_remove, job_uuid), END}},
    {"job_cancel", DSYS_MSG_JOB_CANCEL, sizeof(struct dsys_job_cancel),
     {U(struct dsys_job_cancel, job_uuid), F(struct dsys_job_cancel, num_chunks, K_U32), END}},
    {"chunk_log_request", DSYS_MSG_CHUNK_LOG_REQUEST, sizeof(struct dsys_chunk_log_request),
     {U(struct dsys_chunk_log_request, job_uuid),
      F(struct dsys_chunk_log_request, chunk_index, K_U32),
      F(struct dsys_chunk_log_request, stream, K_U8),
      F(struct dsys_chunk_log_request, offset, K_U64),
      F(struct dsys_chunk_log_request, max_length, K_U32), END}},
    {"chunk_log", DSYS_MSG_CHUNK_LOG, sizeof(struct dsys_chunk_log),
     {U(struct dsys_chunk_log, job_uuid), F(struct dsys_chunk_log, chunk_index, K_U32),
      F(struct dsys_chunk_log, attempt, K_U32), F(struct dsys_chunk_log, offset, K_U64),
      F(struct dsys_chunk_log, total_length, K_U64), F(struct dsys_chunk_log, running, K_U8),
      F(struct dsys_chunk_log, data_length, K_U32), END}},
    {"node_list_request", DSYS_MSG_NODE_LIST_REQUEST, sizeof(struct dsys_node_list_request),
     {END}},
    {"node_list_response", DSYS_MSG_NODE_LIST_RESPONSE, sizeof(struct dsys_node_list_response),
     {F(struct dsys_node_list_response, num_nodes, K_U32), END}},
    {"cluster_change", DSYS_MSG_CLUSTER_CHANGE, sizeof(struct dsys_cluster_change),
     {F(struct dsys_cluster_change, op, K_U8),
      F(struct dsys_cluster_change, member_length, K_U32), END}},
    {"raft_message", DSYS_MSG_RAFT_MESSAGE, sizeof(struct dsys_raft_message), {END}},
    {"balancer_lease", DSYS_MSG_BALANCER_LEASE, sizeof(struct dsys_balancer_lease),
     {F(struct dsys_balancer_lease, epoch, K_U64),
      F(struct dsys_balancer_lease, endpoint_length, K_U32), END}},
    {"balancer_lease_reply", DSYS_MSG_BALANCER_LEASE_REPLY,
     sizeof(struct dsys_balancer_lease_reply),
     {F(struct dsys_balancer_lease_reply, epoch, K_U64),
      U(struct dsys_balancer_lease_reply, holder_uuid),
      F(struct dsys_balancer_lease_reply, duration_ms, K_U32),
      F(struct dsys_balancer_lease_reply, granted, K_U8),
      F(struct dsys_balancer_lease_reply, endpoint_length, K_U32), END}},
    {"balancer_sync", DSYS_MSG_BALANCER_SYNC, sizeof(struct dsys_balancer_sync),
     {U(struct dsys_balancer_sync, stream_uuid), F(struct dsys_balancer_sync, after, K_U64),
      F(struct dsys_balancer_sync, wait_ms, K_U32), END}},
    {"balancer_sync_reply", DSYS_MSG_BALANCER_SYNC_REPLY,
     sizeof(struct dsys_balancer_sync_reply),
     {U(struct dsys_balancer_sync_reply, stream_uuid),
      F(struct dsys_balancer_sync_reply, first_seq, K_U64),
      F(struct dsys_balancer_sync_reply, snapshot, K_U8),
      F(struct dsys_balancer_sync_reply, body_length, K_U32), END}},
    {"storage_heartbeat", DSYS_MSG_STORAGE_HEARTBEAT, sizeof(struct dsys_storage_heartbeat),
     {F(struct dsys_storage_heartbeat, flags, K_U8),
      F(struct dsys_storage_heartbeat, capacity_bytes, K_U64),
      F(struct dsys_storage_heartbeat, used_bytes, K_U64),
      F(struct dsys_storage_heartbeat, files, K_U64),
      F(struct dsys_storage_heartbeat, under_replicated_files, K_U64),
      F(struct dsys_storage_heartbeat, under_replicated_bytes, K_U64),
      F(struct dsys_storage_heartbeat, endpoint_length, K_U32),
      F(struct dsys_storage_heartbeat, detail_length, K_U32), END}},
    {"storage_nodes_request", DSYS_MSG_STORAGE_NODES_REQUEST,
     sizeof(struct dsys_storage_nodes_request), {END}},
    {"storage_nodes", DSYS_MSG_STORAGE_NODES, sizeof(struct dsys_storage_nodes),
     {F(struct dsys_storage_nodes, replicas, K_U8),
      F(struct dsys_storage_nodes, repair_after_ms, K_U64),
      F(struct dsys_storage_nodes, num_nodes, K_U32), END}},
    {"file_keep", DSYS_MSG_FILE_KEEP, sizeof(struct dsys_file_keep),
     {F(struct dsys_file_keep, op, K_U8), F(struct dsys_file_keep, replicas, K_U8),
      F(struct dsys_file_keep, num_files, K_U32), END}},
    {"file_list_request", DSYS_MSG_FILE_LIST_REQUEST, sizeof(struct dsys_file_list_request),
     {END}},
    {"file_list", DSYS_MSG_FILE_LIST, sizeof(struct dsys_file_list),
     {F(struct dsys_file_list, num_files, K_U32), END}},
    {"file_gc", DSYS_MSG_FILE_GC, sizeof(struct dsys_file_gc),
     {F(struct dsys_file_gc, num_files, K_U32), END}},
    {"file_gc_reply", DSYS_MSG_FILE_GC_REPLY, sizeof(struct dsys_file_gc_reply),
     {F(struct dsys_file_gc_reply, grace_ms, K_U64), F(struct dsys_file_gc_reply, num_ids, K_U32),
      END}},
};

static void print_sizes(void) {
#define P(T) printf("%s %zu\n", #T, sizeof(struct dsys_##T))
  P(generic_message);
  P(worker_request);
  P(worker_status);
  P(file_request);
  P(file_response);
  P(file_entry);
  P(chunk_attempt);
  P(chunk_record);
  P(job_list_entry);
  P(node_entry);
  P(storage_entry);
  P(kept_file);
  P(gc_entry);
  P(fetch_count);
  P(attempt_record);
  P(chunk_index_entry);
#undef P
  for (size_t i = 0; i < sizeof MSGS / sizeof MSGS[0]; i++) {
    printf("%s %zu %u\n", MSGS[i].name, MSGS[i].size, MSGS[i].type);
  }
}

static int parse_uuid(const char *s, uint8_t id[16]) {
  if (strlen(s) != 32) return -1;
  for (int i = 0; i < 16; i++) {
    unsigned v;
    if (!isxdigit((unsigned char)s[2 * i]) || !isxdigit((unsigned char)s[2 * i + 1])) return -1;
    if (sscanf(s + 2 * i, "%2x", &v) != 1) return -1;
    id[i] = (uint8_t)v;
  }
  return 0;
}

static const size_t KIND_SIZE[] = {1, 4, 4, 8, 8};

/* Writes one field value into the struct bytes, converting to little-endian. */
static int put(uint8_t *buf, const struct field *f, const char *tok) {
  if (f->size != KIND_SIZE[f->kind]) return -1;
  char *end;
  errno = 0;
  if (f->kind == K_UUID) {
    uint8_t id[16];
    uint64_t u, l;
    if (parse_uuid(tok, id)) return -1;
    dsys_uuid_split(id, &u, &l);
    u = dsys_le64(u);
    l = dsys_le64(l);
    memcpy(buf + f->off, &u, 8);
    memcpy(buf + f->off2, &l, 8);
  } else if (f->kind == K_I32) {
    long long v = strtoll(tok, &end, 10);
    if (*end || errno || v < INT32_MIN || v > INT32_MAX) return -1;
    uint32_t w = dsys_le32((uint32_t)(int32_t)v);
    memcpy(buf + f->off, &w, 4);
  } else {
    unsigned long long v = strtoull(tok, &end, 10);
    if (*end || errno || tok[0] == '-') return -1;
    if (f->kind == K_U8) {
      if (v > 0xff) return -1;
      buf[f->off] = (uint8_t)v;
    } else if (f->kind == K_U32) {
      if (v > 0xffffffffULL) return -1;
      uint32_t w = dsys_le32((uint32_t)v);
      memcpy(buf + f->off, &w, 4);
    } else {
      uint64_t w = dsys_le64((uint64_t)v);
      memcpy(buf + f->off, &w, 8);
    }
  }
  return 0;
}

static int encode_line(char *line, int lineno) {
  char *save = NULL;
  char *name = strtok_r(line, " \t\r\n", &save);
  if (!name) return 0;
  const struct msg *m = NULL;
  for (size_t i = 0; i < sizeof MSGS / sizeof MSGS[0]; i++) {
    if (strcmp(MSGS[i].name, name) == 0) m = &MSGS[i];
  }
  if (!m) return fprintf(stderr, "line %d: unknown message %s\n", lineno, name), -1;
  uint8_t buf[4096];
  memset(buf, 0, sizeof buf);
  uint8_t node[16];
  char *tok = strtok_r(NULL, " \t\r\n", &save);
  if (!tok || parse_uuid(tok, node)) return fprintf(stderr, "line %d: bad node\n", lineno), -1;
  dsys_header_init((struct dsys_generic_message *)buf, m->type, node, m->size);
  for (const struct field *f = m->fields; !(f->size == 0 && f->off2 == 1); f++) {
    tok = strtok_r(NULL, " \t\r\n", &save);
    if (!tok || put(buf, f, tok)) {
      return fprintf(stderr, "line %d: %s: bad value for field at offset %zu\n", lineno, name,
                     f->off),
             -1;
    }
  }
  if (strtok_r(NULL, " \t\r\n", &save)) {
    return fprintf(stderr, "line %d: %s: too many values\n", lineno, name), -1;
  }
  for (size_t i = 0; i < m->size; i++) printf("%02x", buf[i]);
  printf("\n");
  return 0;
}

int main(int argc, char **argv) {
  if (argc == 2 && strcmp(argv[1], "sizes") == 0) {
    print_sizes();
    return 0;
  }
  if (argc != 1) {
    fprintf(stderr, "usage: %s [sizes] < vectors\n", argv[0]);
    return 2;
  }
  char line[8192];
  int lineno = 0;
  while (fgets(line, sizeof line, stdin)) {
    if (encode_line(line, ++lineno)) return 1;
  }
  return 0;
}
