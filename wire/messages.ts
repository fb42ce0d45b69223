/**
 * Message types of the dsys wire protocol (docs/wire.md): numeric codes, enums, the TypeScript
 * shape of every message, and the byte-layout schema the generic codec, the doc generator and
 * the C cross-check all read, so the layout is written down exactly once.
 * @module
 */

import type { Uuid } from "./uuid.ts";

/** A role that may send a message type: a node role, `client`, or `admin` (an admin client). */
export type SenderRole = "master" | "balancer" | "storage" | "worker" | "client" | "admin";

/** Numeric `message_type` codes (u8), grouped by subsystem in blocks of ten. */
export const MessageType = {
  Error: 1,
  Ok: 2,
  WorkerRequest: 10,
  WorkerRequestAck: 11,
  WorkerStatus: 12,
  WorkerRegister: 13,
  WorkerHeartbeat: 14,
  ChunkFinished: 15,
  FileRequest: 20,
  FileResponse: 21,
  FilePut: 22,
  FilePutAck: 23,
  FileStat: 24,
  FileStatResponse: 25,
  StorageStatsRequest: 26,
  StorageStats: 27,
  JobSubmit: 30,
  JobSubmitAck: 31,
  JobStatusRequest: 32,
  JobStatusResponse: 33,
  JobListRequest: 34,
  JobListResponse: 35,
  JobDispatch: 36,
  JobRemove: 37,
  JobCancel: 38,
  NodeListRequest: 40,
  NodeListResponse: 41,
  ClusterChange: 42,
  ChunkLogRequest: 43,
  ChunkLog: 44,
  RaftMessage: 50,
  BalancerLease: 60,
  BalancerLeaseReply: 61,
  BalancerSync: 62,
  BalancerSyncReply: 63,
  StorageHeartbeat: 70,
  StorageNodesRequest: 71,
  StorageNodes: 72,
  FileKeep: 73,
  FileListRequest: 74,
  FileList: 75,
  FileGc: 76,
  FileGcReply: 77,
} as const;
/** Any valid `message_type` code. */
export type MessageType = typeof MessageType[keyof typeof MessageType];

/** `error.code` values (u32). Receivers must accept unknown codes (treat as Internal). */
export const ErrorCode = {
  /** The frame was malformed (any WireError); the text says which check failed. */
  BadMessage: 1,
  /** `message_type` is not one this node understands. */
  UnknownType: 2,
  /** A length or count exceeds the receiver's limits. */
  TooLarge: 3,
  /** The requested file / job / node does not exist. */
  NotFound: 4,
  /** A file id was uploaded with different bytes (content hash mismatch / length mismatch). */
  Conflict: 5,
  /** Well-formed but semantically invalid request (e.g. 0 chunks, offset past end). */
  BadRequest: 6,
  /** This master is not the Raft leader; text = the leader's member id NAME@ENDPOINT ("" if unknown). */
  NotLeader: 7,
  /** Temporarily unable to serve (no quorum, no workers, shutting down): retry later. */
  Unavailable: 8,
  /** Bug or unexpected I/O failure on the receiver. */
  Internal: 9,
  /** The message type is valid but not served by this role (e.g. job_submit to storage). */
  WrongRole: 10,
  /** The authenticated sender may not send this message, or may not touch this job or file. */
  Forbidden: 11,
  /** The receiver's disk is full; nothing of the request was kept. Retry elsewhere or later. */
  NoSpace: 12,
  /** A `file_put` not at the upload's next offset: `error.value` is the offset to resume at. */
  WrongOffset: 13,
} as const;
/** Any known error code. */
export type ErrorCode = typeof ErrorCode[keyof typeof ErrorCode];

/** State of one chunk (and of a whole job; a job is never Lost). */
export const ChunkState = {
  Queued: 0,
  Running: 1,
  Succeeded: 2,
  Failed: 3,
  /** The worker running it vanished; the master will re-dispatch (new attempt). */
  Lost: 4,
  /** Stopped by `job_cancel` (or by the job's `max_failed_chunks`): final, never run again. */
  Cancelled: 5,
} as const;
/** Any chunk state code. */
export type ChunkState = typeof ChunkState[keyof typeof ChunkState];
/** Job states share the chunk state codes: 1 running, 2 succeeded, 3 failed, 5 cancelled. */
export const JobState: typeof ChunkState = ChunkState;
/** Any job state code. */
export type JobState = ChunkState;

/** Why a chunk failed (`failure` field of worker_status / chunk records). */
export const FailureCode = {
  None: 0,
  /** The program exited with a non-zero exit code. */
  ExitCode: 1,
  /** The program was killed by a signal (see `signal`). */
  Signal: 2,
  /** time_limit_ms elapsed; the worker killed the program. */
  Timeout: 3,
  /** The program could not be started (bad binary, exec error). */
  SpawnFailed: 4,
  /** An input file could not be fetched from storage. */
  InputUnavailable: 5,
  /** Outputs could not be uploaded to storage. */
  OutputFailed: 6,
  /** The worker stopped heartbeating while running the chunk. */
  WorkerLost: 7,
  /** Worker-internal error. */
  Internal: 8,
  /** The chunk went over its memory limit: the kernel's OOM killer killed one of its processes. */
  Oom: 9,
  /** The chunk went over its process limit: the kernel refused it a fork. */
  Pids: 10,
  /** The chunk filled its disk limit (output dir, tmp, stdout and stderr together). */
  OutputQuota: 11,
  /** The chunk used more CPU time than its limit. */
  CpuTime: 12,
  /** The job asks for more than the worker allows (a limit above its maximum, host network). */
  Policy: 13,
} as const;
/** Any failure code. */
export type FailureCode = typeof FailureCode[keyof typeof FailureCode];

/**
 * Per-chunk limits a job asks for (extension fields of job_submit, job_dispatch and
 * worker_request, carried unchanged from the client to the worker). 0 or absent = the worker's
 * default; a worker refuses (failure POLICY) what is above its maximum. What they bound:
 * roles/worker/limits.ts.
 */
export interface LimitFields {
  /** Memory of all the chunk's processes together (and its tmpfs), bytes; 0 = default. */
  memoryBytes?: number;
  /** Processes and threads of the chunk at the same time; 0 = default. */
  maxProcs?: number;
  /** CPU time of all the chunk's processes together, ms; 0 = default. */
  cpuTimeMs?: number;
  /** Bytes the chunk may write (outputs, TMPDIR, stdout, stderr together); 0 = default. */
  diskBytes?: number;
  /** 0 = its own network namespace with loopback only; 1 = the host's network (only where the
   * worker allows it). */
  network?: number;
}

/** The limit fields of `m` that are set (non-zero), or null when none is: what a master keeps
 * of a submission and the balancer of a dispatch, to hand on. */
export function limitFieldsOf(m: LimitFields): LimitFields | null {
  const out: LimitFields = {};
  for (const k of ["memoryBytes", "maxProcs", "cpuTimeMs", "diskBytes", "network"] as const) {
    if (m[k]) out[k] = m[k];
  }
  return Object.keys(out).length > 0 ? out : null;
}

/** Role of a node in node_list_response. */
export const NodeRole = { Master: 1, Balancer: 2, Storage: 3, Worker: 4, Client: 5 } as const;
/** Any node role code. */
export type NodeRole = typeof NodeRole[keyof typeof NodeRole];

/** Liveness of a node in node_list_response as seen by the answering master. */
export const NodeState = { Alive: 0, Suspect: 1, Dead: 2 } as const;
/** Any node state code. */
export type NodeState = typeof NodeState[keyof typeof NodeState];

/** Bit flags of a node entry. */
export const NodeFlags = { Leader: 1 } as const;
/** `op` of cluster_change. */
export const ClusterOp = { AddMaster: 1, RemoveMaster: 2, TransferLeader: 3 } as const;
/** Bit flags of file_put. */
export const FilePutFlags = { Last: 1 } as const;
/**
 * Bit flags of a storage node (storage_heartbeat, storage_entry): `Full` = its disk is (nearly)
 * full, `Failing` = its disk returns I/O errors; either way it takes no new files.
 */
export const StorageFlags = { Full: 1, Failing: 2 } as const;
/** `op` of file_keep. */
export const FileKeepOp = { Keep: 1, Unkeep: 2 } as const;
/** Most replicas a file can ask for (file_put `replicas`). */
export const MAX_REPLICAS = 7;

/**
 * Decoder bounds. Every length and count is checked against these before anything is
 * allocated, so a hostile frame cannot make a node allocate more than it allows.
 */
export interface WireLimits {
  /** Largest whole frame accepted, bytes. */
  maxFrame: number;
  /** Largest header_length accepted (headers may grow, but not unboundedly), bytes. */
  maxHeader: number;
  /** Largest argument, bytes. */
  maxArgument: number;
  /** Largest file chunk in one file_put / file_response, bytes. */
  maxData: number;
  /** Most entries in one file list or file-id list. */
  maxFiles: number;
  /** Most chunks of a job (num_chunks, chunk records, dispatch entries). */
  maxChunks: number;
  /** Most entries in job/node/stats lists. */
  maxEntries: number;
  /** Longest text field (names, reasons, labels, endpoints, error text), bytes. */
  maxText: number;
  /** Longest stderr tail, bytes. */
  maxStderr: number;
  /** Largest raft_message payload, bytes. */
  maxRaft: number;
  /** Largest capability or ticket section (32 bytes per file of a job), bytes. */
  maxAuth: number;
}

const MiB = 1024 * 1024;
/** Limits used when `decode` gets none; documented in docs/wire.md. */
export const DEFAULT_LIMITS: Readonly<WireLimits> = Object.freeze({
  maxFrame: 80 * MiB,
  maxHeader: 4096,
  maxArgument: 1 * MiB,
  maxData: 16 * MiB,
  maxFiles: 65536,
  maxChunks: 1 << 20,
  maxEntries: 1 << 20,
  maxText: 64 * 1024,
  maxStderr: 64 * 1024,
  maxRaft: 64 * MiB,
  maxAuth: 32 * 65536,
});

// ---------------------------------------------------------------------------------------------
// Records carried in payloads

/** A file named in a job: content id, size in bytes, name the program sees. */
export interface FileEntry {
  /** Content id of the file. */
  id: Uuid;
  /** File size in bytes. */
  size: number;
  /** UTF-8 file name (relative path the program sees). */
  name: string;
}
/** One chunk to run with the attempt number the master assigned. */
export interface ChunkAttempt {
  /** Chunk to run. */
  chunkIndex: number;
  /** Attempt number assigned by the master (first = 1). */
  attempt: number;
}
/** Per-chunk result in job_status_response. */
export interface ChunkRecord {
  /** Chunk index. */
  chunkIndex: number;
  /** ChunkState. */
  state: ChunkState;
  /** Attempt number. */
  attempt: number;
  /** Process exit code (0 when killed by a signal). */
  exitCode: number;
  /** Signal number that killed the process, 0 if none. */
  signal: number;
  /** FailureCode, 0 if none. */
  failure: FailureCode;
  /** Wall-clock run time, ms. */
  durationMs: number;
  /** Output files, already stored. */
  outputs: FileEntry[];
  /** Last bytes of the program's stderr. */
  stderrTail: Uint8Array;
  /** UTF-8 failure explanation. */
  reason: string;
  /** When a retry of a failed attempt may start (Unix ms; 0 = no retry pending). */
  retryAtMs: number;
  /** Earlier attempts that failed and were retried, oldest first. */
  history: AttemptRecord[];
  /** Node id of the worker running it or that ran it (nil = none yet). */
  worker: Uuid;
}
/** One failed attempt of a chunk that was retried (chunk_record.history). */
export interface AttemptRecord {
  /** Attempt number. */
  attempt: number;
  /** ChunkState it ended in (failed). */
  state: ChunkState;
  /** Process exit code. */
  exitCode: number;
  /** Signal that killed it, 0 if none. */
  signal: number;
  /** FailureCode. */
  failure: FailureCode;
  /** Run time, ms. */
  durationMs: number;
  /** When its result was recorded (Unix ms, the leader's clock). */
  atMs: number;
  /** UTF-8 failure explanation. */
  reason: string;
}
/** One chunk index (job_cancel.chunks). */
export interface ChunkIndexEntry {
  /** Chunk index. */
  chunkIndex: number;
}
/** One job in job_list_response. */
export interface JobListEntry {
  /** Job id. */
  job: Uuid;
  /** JobState. */
  state: JobState;
  /** Chunks of the job. */
  numChunks: number;
}
/** One node in node_list_response. */
export interface NodeEntry {
  /** Node id. */
  id: Uuid;
  /** NodeRole. */
  role: NodeRole;
  /** NodeState. */
  state: NodeState;
  /** NodeFlags bits (1 = raft leader). */
  flags: number;
  /** Worker slots (0 for other roles). */
  slots: number;
  /** Free worker slots. */
  freeSlots: number;
  /** Unix epoch milliseconds of the last message seen from the node. */
  lastSeenMs: number;
  /** Where to connect, `tcp://HOST:PORT` ("" for a node that listens on nothing: workers). */
  endpoint: string;
  /** Its keyring name (a server's: connect as `NAME@endpoint`), or a worker's label. */
  name: string;
  /** Why the node is suspect or dead, as the lister saw it ("" when alive). */
  detail: string;
}
/** A storage node as the masters' leader sees it (storage_nodes). */
export interface StorageEntry {
  /** Node id. */
  id: Uuid;
  /** NodeState: alive, suspect (missed heartbeats), dead (gone for the repair delay). */
  state: NodeState;
  /** StorageFlags bits. */
  flags: number;
  /** Bytes the node may hold (its disk's size, or its `--capacity`). */
  capacityBytes: number;
  /** Bytes of committed files on the node. */
  usedBytes: number;
  /** Committed files on the node. */
  files: number;
  /** Files of this node with fewer replicas than they should have, as of its last scan. */
  underReplicatedFiles: number;
  /** Bytes of those files. */
  underReplicatedBytes: number;
  /** Unix epoch ms of the node's last heartbeat (0 = none since this leader took over). */
  lastSeenMs: number;
  /** Where to connect: `[NAME@]tcp://HOST:PORT`. */
  endpoint: string;
  /** Why it is suspect, dead, full or failing ("" when healthy). */
  detail: string;
}
/** A file a user keeps (file_list). */
export interface KeptFileEntry {
  /** File id. */
  id: Uuid;
  /** Size in bytes. */
  size: number;
  /** Replicas the put asked for. */
  replicas: number;
  /** Live jobs that refer to the file (program, input or output). */
  refs: number;
  /** Unix ms of the keep. */
  keptAtMs: number;
  /** Name the file was put under. */
  name: string;
}
/** A file a storage node holds, offered for collection (file_gc). */
export interface GcEntry {
  /** File id. */
  id: Uuid;
  /** Ms since the file was last put on the node. */
  ageMs: number;
}
/** How often one file was fetched (storage_stats). */
export interface FetchCount {
  /** File id. */
  file: Uuid;
  /** Number of file_request messages served for this file. */
  count: number;
}

// ---------------------------------------------------------------------------------------------
// Messages. Every message has `type` and `node` (the sender's 16-byte node uuid).

/** Fields every message has. */
export interface MessageBase {
  /** Sender node uuid (16 bytes); clients use a per-process random uuid. */
  node: Uuid;
}
/** Reply to a request that failed; `text` is human readable (NOT_LEADER: leader endpoint). */
export interface ErrorMessage extends MessageBase {
  /** Message type code (discriminant). */
  type: typeof MessageType.Error;
  /** ErrorCode. */
  code: number;
  /** UTF-8 explanation (NOT_LEADER: leader endpoint). */
  text: string;
  /** A number the code defines (WRONG_OFFSET: the offset to resume the upload at), else 0. */
  value?: number;
}
/** Generic success reply with an optional value (0 when unused). */
export interface OkMessage extends MessageBase {
  /** Message type code (discriminant). */
  type: typeof MessageType.Ok;
  /** Optional result value, 0 when unused. */
  value: number;
}
/** balancer -> worker: run one chunk of a job. */
export interface WorkerRequest extends MessageBase, LimitFields {
  /** Message type code (discriminant). */
  type: typeof MessageType.WorkerRequest;
  /** Job id. */
  job: Uuid;
  /** File id of the program (stored like an input; fetched from storage). */
  programId: Uuid;
  /** Size of the program file in bytes. */
  programSize: number;
  /** Files to fetch from storage. */
  inputFiles: FileEntry[];
  /** Chunk to run (0-based). */
  chunkIndex: number;
  /** Chunks in the job. */
  numChunks: number;
  /** Opaque argument passed to the program. */
  argument: Uint8Array;
  /** Kill the program after this, 0 = no limit. */
  timeLimitMs: number;
  /** Attempt number assigned by the master. */
  attempt: number;
  /** Unix ms until which `caps` are good. */
  capExpiryMs?: number;
  /** One 32-byte read capability per input file, in input order (docs/architecture.md). */
  caps?: Uint8Array;
  /** Placement ticket: proves to the masters that this worker was given this attempt. */
  ticket?: Uint8Array;
  /** Keyring name of the job's owner (outputs are stored as theirs). */
  owner?: string;
  /** 32-byte read capability for the program file (same expiry as `caps`). */
  programCap?: Uint8Array;
  /**
   * Lease epoch of the balancer that placed it (0: a balancer run without masters). A worker
   * refuses a request of an epoch older than the newest it has seen: a deposed primary's
   * late pushes are fenced off.
   */
  epoch?: number;
}
/** worker -> balancer: accepted (slot taken) or refused with a reason. */
export interface WorkerRequestAck extends MessageBase {
  /** Message type code (discriminant). */
  type: typeof MessageType.WorkerRequestAck;
  /** Job id. */
  job: Uuid;
  /** Chunk index. */
  chunkIndex: number;
  /** Attempt number. */
  attempt: number;
  /** 1 = accepted, 0 = refused. */
  accepted: boolean;
  /** UTF-8 refusal reason, empty when accepted. */
  reason: string;
}
/** worker -> master: state change / result of one chunk attempt. */
export interface WorkerStatus extends MessageBase {
  /** Message type code (discriminant). */
  type: typeof MessageType.WorkerStatus;
  /** Job id. */
  job: Uuid;
  /** ChunkState. */
  state: ChunkState;
  /** Chunk index. */
  chunkIndex: number;
  /** Attempt number. */
  attempt: number;
  /** Process exit code (0 when killed by a signal). */
  exitCode: number;
  /** Signal number that killed the process, 0 if none. */
  signal: number;
  /** FailureCode, 0 if none. */
  failure: FailureCode;
  /** Wall-clock run time, ms. */
  durationMs: number;
  /** Output files, already stored. */
  outputs: FileEntry[];
  /** Last bytes of the program's stderr. */
  stderrTail: Uint8Array;
  /** UTF-8 failure explanation. */
  reason: string;
  /** The placement ticket of worker_request (results are accepted only with it). */
  ticket?: Uint8Array;
}
/** worker -> balancer: join with capacity and the file ids in the worker's cache. */
export interface WorkerRegister extends MessageBase {
  /** Message type code (discriminant). */
  type: typeof MessageType.WorkerRegister;
  /** Concurrent chunks the worker runs. */
  slots: number;
  /** Slots free now. */
  freeSlots: number;
  /** File ids in the worker's cache (16 bytes each). */
  files: Uuid[];
  /** UTF-8 hostname / label. */
  label: string;
  /** Where the worker serves its running chunks' logs, `tcp://HOST:PORT` ("" = nowhere). */
  endpoint?: string;
}
/** worker -> balancer: periodic liveness with cache changes since the last one. */
export interface WorkerHeartbeat extends MessageBase {
  /** Message type code (discriminant). */
  type: typeof MessageType.WorkerHeartbeat;
  /** Concurrent chunks the worker runs. */
  slots: number;
  /** Slots free now. */
  freeSlots: number;
  /** File ids cached since the last heartbeat. */
  added: Uuid[];
  /** File ids evicted since the last heartbeat. */
  evicted: Uuid[];
}
/** worker -> balancer: a chunk attempt ended (frees the slot). */
export interface ChunkFinished extends MessageBase {
  /** Message type code (discriminant). */
  type: typeof MessageType.ChunkFinished;
  /** Job id. */
  job: Uuid;
  /** Chunk index. */
  chunkIndex: number;
  /** Attempt number. */
  attempt: number;
  /** Final ChunkState. */
  state: ChunkState;
}
/** any -> storage: read up to maxLength bytes (0 = server default) of a file at offset. */
export interface FileRequest extends MessageBase {
  /** Message type code (discriminant). */
  type: typeof MessageType.FileRequest;
  /** File id. */
  file: Uuid;
  /** First byte wanted. */
  offset: number;
  /** Most bytes wanted, 0 = server default chunk. */
  maxLength: number;
  /** Unix ms until which `cap` is good (workers). */
  capExpiryMs?: number;
  /** Read capability from worker_request (workers; clients read their own files without). */
  cap?: Uint8Array;
}
/** storage -> requester: bytes of a file at offset; fileLength is the total size. */
export interface FileResponse extends MessageBase {
  /** Message type code (discriminant). */
  type: typeof MessageType.FileResponse;
  /** File id. */
  file: Uuid;
  /** Total size of the file. */
  fileLength: number;
  /** Offset of the first payload byte. */
  offset: number;
  /** File bytes at offset: the rest of the frame. */
  data: Uint8Array;
}
/** client/worker -> storage: one chunk of an upload. */
export interface FilePut extends MessageBase {
  /** Message type code (discriminant). */
  type: typeof MessageType.FilePut;
  /** File id = first 16 bytes of SHA-256 of the whole file. */
  file: Uuid;
  /** Size of the whole file. */
  totalLength: number;
  /** Offset of the first payload byte. */
  offset: number;
  /** FilePutFlags bits (1 = last chunk). */
  flags: number;
  /**
   * Keyring user the file is stored for (workers storing outputs; ignored from clients). From a
   * storage node copying a replica: the file's owners, separated by `\n`.
   */
  owner?: string;
  /** Replicas the file should have (1..MAX_REPLICAS), 0 = the cluster's default. */
  replicas?: number;
  /** File bytes at offset: the rest of the frame. */
  data: Uint8Array;
}
/** storage -> uploader: bytes durable so far; committed once verified and complete. */
export interface FilePutAck extends MessageBase {
  /** Message type code (discriminant). */
  type: typeof MessageType.FilePutAck;
  /** File id. */
  file: Uuid;
  /** Bytes stored durably so far. */
  durableLength: number;
  /** 1 = whole file verified and stored. */
  committed: boolean;
}
/** any -> storage: does the file exist, how long is it. */
export interface FileStat extends MessageBase {
  /** Message type code (discriminant). */
  type: typeof MessageType.FileStat;
  /** File id. */
  file: Uuid;
  /** Masters: answer for this user (exists only if the file is theirs); "" = any. */
  user?: string;
}
/** storage -> requester: answer to file_stat (a missing file is not an error). */
export interface FileStatResponse extends MessageBase {
  /** Message type code (discriminant). */
  type: typeof MessageType.FileStatResponse;
  /** File id. */
  file: Uuid;
  /** 1 = committed file present. */
  exists: boolean;
  /** File size, 0 when absent. */
  length: number;
}
/** any -> storage: ask for counters. */
export interface StorageStatsRequest extends MessageBase {
  /** Message type code (discriminant). */
  type: typeof MessageType.StorageStatsRequest;
}
/** storage -> requester: counters since start. */
export interface StorageStats extends MessageBase {
  /** Message type code (discriminant). */
  type: typeof MessageType.StorageStats;
  /** File_request messages served. */
  gets: number;
  /** Bytes sent in file_response. */
  getBytes: number;
  /** File_put messages accepted. */
  puts: number;
  /** Bytes received in file_put. */
  putBytes: number;
  /** Committed files stored. */
  files: number;
  /** Bytes of committed files. */
  storedBytes: number;
  /** Per-file fetch counts. */
  fetchCounts: FetchCount[];
}
/** client -> master: submit a job; (client, sequence) makes it exactly-once. */
export interface JobSubmit extends MessageBase, LimitFields {
  /** Message type code (discriminant). */
  type: typeof MessageType.JobSubmit;
  /** Submitting client's id. */
  client: Uuid;
  /** Client's request sequence; retries reuse it. */
  sequence: number;
  /** Chunks to run (>= 1). */
  numChunks: number;
  /** Per-chunk time limit, 0 = none. */
  timeLimitMs: number;
  /** File id of the program, already stored (the submitter must own it). */
  programId: Uuid;
  /** Program size in bytes (masters use the size storage reports). */
  programSize: number;
  /** Opaque argument. */
  argument: Uint8Array;
  /** Input files (already stored). */
  inputFiles: FileEntry[];
  /** UTF-8 program name for display. */
  programName: string;
  /** Times a failed chunk is run again (each chunk its own budget, backoff between); 0 = never. */
  retries?: number;
  /** Stop the job (cancel what is left) once this many chunks failed for good; 0 = never. */
  maxFailedChunks?: number;
}
/** master -> client: the job's uuid; duplicate = this (client, sequence) was seen before. */
export interface JobSubmitAck extends MessageBase {
  /** Message type code (discriminant). */
  type: typeof MessageType.JobSubmitAck;
  /** Id of the (new or earlier) job. */
  job: Uuid;
  /** Echo of job_submit.sequence. */
  sequence: number;
  /** 1 = this submission was already accepted before. */
  duplicate: boolean;
}
/** client -> master: ask for a job's state. */
export interface JobStatusRequest extends MessageBase {
  /** Message type code (discriminant). */
  type: typeof MessageType.JobStatusRequest;
  /** Job id. */
  job: Uuid;
}
/** master -> client: job state, counters and per-chunk records. */
export interface JobStatusResponse extends MessageBase {
  /** Message type code (discriminant). */
  type: typeof MessageType.JobStatusResponse;
  /** Job id. */
  job: Uuid;
  /** JobState. */
  state: JobState;
  /** Chunks of the job. */
  numChunks: number;
  /** Chunks succeeded. */
  done: number;
  /** Chunks failed for good. */
  failed: number;
  /** Chunks running. */
  running: number;
  /** Chunks waiting. */
  queued: number;
  /** Per-chunk records. */
  chunks: ChunkRecord[];
}
/** client -> master: list jobs. */
export interface JobListRequest extends MessageBase {
  /** Message type code (discriminant). */
  type: typeof MessageType.JobListRequest;
}
/** master -> client: all known jobs with their state. */
export interface JobListResponse extends MessageBase {
  /** Message type code (discriminant). */
  type: typeof MessageType.JobListResponse;
  /** Jobs. */
  jobs: JobListEntry[];
}
/** master -> balancer: run these chunks of a job (balancer answers ok). */
export interface JobDispatch extends MessageBase, LimitFields {
  /** Message type code (discriminant). */
  type: typeof MessageType.JobDispatch;
  /** Job id. */
  job: Uuid;
  /** Chunks of the job. */
  numChunks: number;
  /** Per-chunk time limit, 0 = none. */
  timeLimitMs: number;
  /** File id of the program. */
  programId: Uuid;
  /** Program size in bytes. */
  programSize: number;
  /** Opaque argument. */
  argument: Uint8Array;
  /** Input files. */
  inputFiles: FileEntry[];
  /** Chunks to run with attempts. */
  chunks: ChunkAttempt[];
  /** Keyring name of the job's owner. */
  owner?: string;
}
/** client -> master: remove a finished job now, as its retention would later. */
export interface JobRemove extends MessageBase {
  /** Message type code (discriminant). */
  type: typeof MessageType.JobRemove;
  /** Job id. */
  job: Uuid;
}
/** client -> master -> balancer -> worker: stop a job's chunks (all of them, or those listed). */
export interface JobCancel extends MessageBase {
  /** Message type code (discriminant). */
  type: typeof MessageType.JobCancel;
  /** Job id. */
  job: Uuid;
  /** Chunks to cancel; empty = every chunk of the job. */
  chunks: ChunkIndexEntry[];
}
/** client -> worker: bytes of a running chunk's stdout or stderr. */
export interface ChunkLogRequest extends MessageBase {
  /** Message type code (discriminant). */
  type: typeof MessageType.ChunkLogRequest;
  /** Job id. */
  job: Uuid;
  /** Chunk index. */
  chunkIndex: number;
  /** 1 = stdout, 2 = stderr. */
  stream: number;
  /** First byte wanted. */
  offset: number;
  /** Most bytes wanted (0 = the worker's default, 64 KiB). */
  maxLength: number;
}
/** worker -> client: a piece of a running chunk's log. */
export interface ChunkLog extends MessageBase {
  /** Message type code (discriminant). */
  type: typeof MessageType.ChunkLog;
  /** Job id. */
  job: Uuid;
  /** Chunk index. */
  chunkIndex: number;
  /** The attempt running (a retry starts its log from 0). */
  attempt: number;
  /** Offset of `data`. */
  offset: number;
  /** Bytes of the stream written so far. */
  totalLength: number;
  /** 1 while the chunk still runs. */
  running: boolean;
  /** The bytes. */
  data: Uint8Array;
}
/** client -> master: list nodes. */
export interface NodeListRequest extends MessageBase {
  /** Message type code (discriminant). */
  type: typeof MessageType.NodeListRequest;
}
/** master -> client: nodes known to the cluster. */
export interface NodeListResponse extends MessageBase {
  /** Message type code (discriminant). */
  type: typeof MessageType.NodeListResponse;
  /** Nodes. */
  nodes: NodeEntry[];
}
/** operator -> master: change the master group's membership, or move its leadership. */
export interface ClusterChange extends MessageBase {
  /** Message type code (discriminant). */
  type: typeof MessageType.ClusterChange;
  /** ClusterOp: 1 add a master, 2 remove a master, 3 transfer leadership to a master. */
  op: number;
  /** The master's Raft member id, `NAME@tcp://HOST:PORT`. */
  member: string;
}
/** master <-> master: opaque Raft payload; one-way, never answered. */
export interface RaftMessage extends MessageBase {
  /** Message type code (discriminant). */
  type: typeof MessageType.RaftMessage;
  /** Opaque Raft message: the rest of the frame. */
  data: Uint8Array;
}
/** balancer -> master: ask for (or renew) the primary balancer lease. */
export interface BalancerLease extends MessageBase {
  /** Message type code (discriminant). */
  type: typeof MessageType.BalancerLease;
  /** The epoch the sender holds, 0 if none. */
  epoch: number;
  /** The sender's advertised endpoint, `NAME@tcp://HOST:PORT` (masters and standbys dial it). */
  endpoint: string;
}
/** master -> balancer: who holds the lease, and whether that is the asker. */
export interface BalancerLeaseReply extends MessageBase {
  /** Message type code (discriminant). */
  type: typeof MessageType.BalancerLeaseReply;
  /** Current lease epoch (0: nobody holds it yet). */
  epoch: number;
  /** Node id of the holder (nil when epoch is 0). */
  holder: Uuid;
  /** Lease length, ms, counted by the asker from when it sent the request. */
  durationMs: number;
  /** True when the asker holds the lease (granted or renewed by this request). */
  granted: boolean;
  /** The holder's advertised endpoint. */
  endpoint: string;
}
/** balancer -> balancer: a standby pulls the primary's scheduler events. */
export interface BalancerSync extends MessageBase {
  /** Message type code (discriminant). */
  type: typeof MessageType.BalancerSync;
  /** Event stream followed (the primary's per-start id; nil = none yet: send a snapshot). */
  stream: Uuid;
  /** Last event sequence number applied. */
  after: number;
  /** The primary may hold the reply this long waiting for new events, ms. */
  waitMs: number;
}
/** balancer -> balancer: a snapshot and/or events, as JSON (roles/balancer/replication.ts). */
export interface BalancerSyncReply extends MessageBase {
  /** Message type code (discriminant). */
  type: typeof MessageType.BalancerSyncReply;
  /** The primary's event stream id. */
  stream: Uuid;
  /** Sequence number of the first event in the body. */
  firstSeq: number;
  /** True when the body starts with a snapshot (then `firstSeq - 1` is its sequence number). */
  snapshot: boolean;
  /** JSON body: `{"snapshot"?: state, "events": [...]}`, bytes as `{"$b": base64}`. */
  body: Uint8Array;
}

/** storage -> master (the leader): I am alive, with my counters; answered with storage_nodes. */
export interface StorageHeartbeat extends MessageBase {
  /** Message type code (discriminant). */
  type: typeof MessageType.StorageHeartbeat;
  /** StorageFlags bits. */
  flags: number;
  /** Bytes the node may hold. */
  capacityBytes: number;
  /** Bytes of committed files. */
  usedBytes: number;
  /** Committed files. */
  files: number;
  /** Files with fewer replicas than they should have, as of the node's last repair scan. */
  underReplicatedFiles: number;
  /** Bytes of those files. */
  underReplicatedBytes: number;
  /** Where to reach the sender: `[NAME@]tcp://HOST:PORT` (NAME = its key's name). */
  endpoint: string;
  /** Why the node is full or failing ("" when healthy). */
  detail: string;
}
/** any -> master (the leader): which storage nodes are there? */
export interface StorageNodesRequest extends MessageBase {
  /** Message type code (discriminant). */
  type: typeof MessageType.StorageNodesRequest;
}
/** master -> requester: the storage membership and the cluster's replication factor. */
export interface StorageNodes extends MessageBase {
  /** Message type code (discriminant). */
  type: typeof MessageType.StorageNodes;
  /** Replicas a file gets when its put names none. */
  replicas: number;
  /** A node silent this long is dead and its files are re-replicated, ms. */
  repairAfterMs: number;
  /** The storage nodes, in no particular order. */
  nodes: StorageEntry[];
}

/** client -> master: keep files until removed (`dsys put`), or stop keeping them (`dsys rm`). */
export interface FileKeep extends MessageBase {
  /** Message type code (discriminant). */
  type: typeof MessageType.FileKeep;
  /** FileKeepOp. */
  op: number;
  /** Replicas the files were put with (keep only). */
  replicas: number;
  /** The files (id, size, name; unkeep: ids only matter). */
  files: FileEntry[];
}
/** client -> master: the files I keep. */
export interface FileListRequest extends MessageBase {
  /** Message type code (discriminant). */
  type: typeof MessageType.FileListRequest;
}
/** master -> client: the files the asker keeps. */
export interface FileList extends MessageBase {
  /** Message type code (discriminant). */
  type: typeof MessageType.FileList;
  /** The kept files, newest first. */
  files: KeptFileEntry[];
}
/** storage -> master (the leader): which of these files may I delete? */
export interface FileGc extends MessageBase {
  /** Message type code (discriminant). */
  type: typeof MessageType.FileGc;
  /** Files held, with the time since each was last put. */
  files: GcEntry[];
}
/** master -> storage: delete these files (the cluster deleted them), if not put within the grace. */
export interface FileGcReply extends MessageBase {
  /** Message type code (discriminant). */
  type: typeof MessageType.FileGcReply;
  /** A file put again within this long is kept (a put racing the delete), ms. */
  graceMs: number;
  /** The files to delete. */
  ids: Uuid[];
}

/** Any protocol message; discriminated on `type`. */
export type Message =
  | ErrorMessage
  | OkMessage
  | WorkerRequest
  | WorkerRequestAck
  | WorkerStatus
  | WorkerRegister
  | WorkerHeartbeat
  | ChunkFinished
  | FileRequest
  | FileResponse
  | FilePut
  | FilePutAck
  | FileStat
  | FileStatResponse
  | StorageStatsRequest
  | StorageStats
  | JobSubmit
  | JobSubmitAck
  | JobStatusRequest
  | JobStatusResponse
  | JobListRequest
  | JobListResponse
  | JobDispatch
  | JobRemove
  | JobCancel
  | ChunkLogRequest
  | ChunkLog
  | NodeListRequest
  | NodeListResponse
  | ClusterChange
  | RaftMessage
  | BalancerLease
  | BalancerLeaseReply
  | BalancerSync
  | BalancerSyncReply
  | StorageHeartbeat
  | StorageNodesRequest
  | StorageNodes
  | FileKeep
  | FileListRequest
  | FileList
  | FileGc
  | FileGcReply;

/** The message interface for a given type code, e.g. `MessageOf<typeof MessageType.Ok>`. */
export type MessageOf<T extends MessageType> = Extract<Message, { type: T }>;

// ---------------------------------------------------------------------------------------------
// Byte-layout schema

/** Scalar kinds of fixed fields; all little-endian; uuid = upper u64 then lower u64. */
export type FieldKind = "u8" | "bool" | "u32" | "i32" | "u64" | "uuid";

/** One fixed-size field of a header or record. */
export interface FieldSpec {
  /** TS property name (for derived length fields: the wire name). */
  key: string;
  /** snake_case name used in C and docs (uuid fields get `_upper`/`_lower` in C). */
  wire: string;
  /** Wire type of the field. */
  kind: FieldKind;
  /** One-line meaning, shown in docs/wire.md. */
  doc: string;
  /** When set, the field is derived: byte length (bytes/text) or count (lists) of that section. */
  lengthOf?: string;
  /** Extension field after the base size: may be absent, then reads as 0/false. */
  ext?: boolean;
  /** Largest valid value (enums). */
  max?: number;
  /** Limit the value is checked against (counts that are not section lengths). */
  limit?: keyof WireLimits;
}
/** Payload section kinds: raw bytes, UTF-8 text, list of records, list of 16-byte ids, rest. */
export type SectionKind = "bytes" | "text" | "list" | "ids" | "rest";
/** One variable-size payload section; they follow each other in declaration order. */
export interface SectionSpec {
  /** TS property name. */
  key: string;
  /** snake_case name used in docs. */
  wire: string;
  /** How the section is encoded. */
  kind: SectionKind;
  /** One-line meaning, shown in docs/wire.md. */
  doc: string;
  /** Max bytes (bytes/text/rest) or max entries (list/ids). */
  limit: keyof WireLimits;
  /** Layout of each entry (list sections only). */
  record?: RecordSpec;
}
/** A record inside a list section: fixed fields then its own sections. */
export interface RecordSpec {
  /** TS interface name, e.g. "FileEntry". */
  name: string;
  /** snake_case name used in C (`struct dsys_<wire>`) and docs. */
  wire: string;
  /** Fixed-size fields, in wire order. */
  fields: FieldSpec[];
  /** Variable sections following the fixed part, in wire order. */
  sections: SectionSpec[];
}
/** Layout of one message type. `fields` exclude the generic header. */
export interface MessageSpec {
  /** Message type code. */
  type: MessageType;
  /** TS interface name, e.g. "WorkerRequest". */
  name: string;
  /** snake_case name, e.g. "worker_request". */
  wire: string;
  /** Minimal header_length accepted (generic part included). */
  base: number;
  /** Fixed header fields after the generic header, in wire order. */
  fields: FieldSpec[];
  /** Payload sections, in wire order. */
  sections: SectionSpec[];
  /** One-line meaning, shown in docs/wire.md. */
  doc: string;
  /** Which socket sends it to which, and what the reply is. */
  flow: string;
  /**
   * Roles whose keys may send it (docs/wire.md, "Who may send what"); anything else is
   * answered FORBIDDEN. `admin` = a client key flagged admin on the keyring.
   */
  senders: readonly SenderRole[];
  /** Expected reply message(s). */
  reply: string;
}

/** Byte size of each field kind. */
export const FIELD_SIZE: Readonly<Record<FieldKind, number>> = {
  u8: 1,
  bool: 1,
  u32: 4,
  i32: 4,
  u64: 8,
  uuid: 16,
};
/** Size of the generic header every message starts with. */
export const GENERIC_HEADER_SIZE = 25;

type Opt = Partial<Pick<FieldSpec, "lengthOf" | "ext" | "max" | "limit">>;
const f =
  (kind: FieldKind) => (key: string, wire: string, doc: string, o: Opt = {}): FieldSpec => ({
    key,
    wire,
    kind,
    doc,
    ...o,
  });
const u8 = f("u8"), bool = f("bool"), u32 = f("u32"), i32 = f("i32"), u64 = f("u64");
const uuid = f("uuid");
const len = (kind: FieldKind, wire: string, section: string, doc: string, ext = false) =>
  f(kind)(wire, wire, doc, ext ? { lengthOf: section, ext } : { lengthOf: section });
const sec = (kind: SectionKind) =>
(
  key: string,
  wire: string,
  limit: keyof WireLimits,
  doc: string,
  record?: RecordSpec,
): SectionSpec => ({ key, wire, kind, limit, doc, record });
const bytes = sec("bytes"), text = sec("text"), list = sec("list"), ids = sec("ids");
const rest = sec("rest");

const STATE_MAX = 5;
/** Largest FailureCode value. */
const FAILURE_MAX = 13;

/** file_entry record: id, size, name. */
export const FILE_ENTRY: RecordSpec = {
  name: "FileEntry",
  wire: "file_entry",
  fields: [
    uuid("id", "file_uuid", "content id of the file"),
    u64("size", "size", "file size in bytes"),
    len("u32", "name_length", "name", "bytes of name"),
  ],
  sections: [text("name", "name", "maxText", "UTF-8 file name (relative path the program sees)")],
};
const CHUNK_ATTEMPT: RecordSpec = {
  name: "ChunkAttempt",
  wire: "chunk_attempt",
  fields: [
    u32("chunkIndex", "chunk_index", "chunk to run", { limit: "maxChunks" }),
    u32("attempt", "attempt", "attempt number assigned by the master (first = 1)"),
  ],
  sections: [],
};
const resultFields = (ext: boolean): FieldSpec[] => [
  u32("chunkIndex", "chunk_index", "chunk index", { ext }),
  u32("attempt", "attempt", "attempt number", { ext }),
  i32("exitCode", "exit_code", "process exit code (0 when killed by a signal)", { ext }),
  u32("signal", "signal", "signal number that killed the process, 0 if none", { ext }),
  u32("failure", "failure", "FailureCode, 0 if none", { ext, max: FAILURE_MAX }),
  u64("durationMs", "duration_ms", "wall-clock run time, ms", { ext }),
  len("u32", "num_outputs", "outputs", "entries in outputs", ext),
  len("u32", "stderr_length", "stderrTail", "bytes of stderr_tail", ext),
  len("u32", "reason_length", "reason", "bytes of reason", ext),
];
/** The LimitFields as extension fields (appended to job_submit, job_dispatch, worker_request). */
const limitFields = (): FieldSpec[] => [
  u64("memoryBytes", "memory_bytes", "chunk memory limit, bytes; 0 = worker default", {
    ext: true,
  }),
  u32("maxProcs", "max_procs", "chunk process (and thread) limit; 0 = worker default", {
    ext: true,
  }),
  u64("cpuTimeMs", "cpu_time_ms", "chunk CPU time limit, ms; 0 = worker default", { ext: true }),
  u64("diskBytes", "disk_bytes", "bytes a chunk may write; 0 = worker default", { ext: true }),
  u8("network", "network", "0 = loopback only, 1 = host network (if the worker allows)", {
    ext: true,
    max: 1,
  }),
];
const resultSections = (): SectionSpec[] => [
  list("outputs", "outputs", "maxFiles", "output files, already stored", FILE_ENTRY),
  bytes("stderrTail", "stderr_tail", "maxStderr", "last bytes of the program's stderr"),
  text("reason", "reason", "maxText", "UTF-8 failure explanation"),
];
const ATTEMPT_RECORD: RecordSpec = {
  name: "AttemptRecord",
  wire: "attempt_record",
  fields: [
    u32("attempt", "attempt", "attempt number"),
    u8("state", "state", "ChunkState it ended in", { max: STATE_MAX }),
    i32("exitCode", "exit_code", "process exit code"),
    u32("signal", "signal", "signal that killed it, 0 if none"),
    u32("failure", "failure", "FailureCode", { max: FAILURE_MAX }),
    u64("durationMs", "duration_ms", "run time, ms"),
    u64("atMs", "at_ms", "Unix ms its result was recorded"),
    len("u32", "reason_length", "reason", "bytes of reason"),
  ],
  sections: [text("reason", "reason", "maxText", "UTF-8 failure explanation")],
};
const CHUNK_INDEX: RecordSpec = {
  name: "ChunkIndexEntry",
  wire: "chunk_index_entry",
  fields: [u32("chunkIndex", "chunk_index", "chunk index", { limit: "maxChunks" })],
  sections: [],
};
const CHUNK_RECORD: RecordSpec = {
  name: "ChunkRecord",
  wire: "chunk_record",
  fields: [
    u32("chunkIndex", "chunk_index", "chunk index"),
    u8("state", "state", "ChunkState", { max: STATE_MAX }),
    ...resultFields(false).slice(1),
    u64("retryAtMs", "retry_at_ms", "Unix ms a pending retry may start, 0 = none"),
    uuid("worker", "worker_uuid", "worker running it or that ran it, nil = none yet"),
    len("u32", "num_history", "history", "entries in history"),
  ],
  sections: [
    ...resultSections(),
    list("history", "history", "maxEntries", "failed attempts that were retried", ATTEMPT_RECORD),
  ],
};
const JOB_LIST_ENTRY: RecordSpec = {
  name: "JobListEntry",
  wire: "job_list_entry",
  fields: [
    uuid("job", "job_uuid", "job id"),
    u8("state", "state", "JobState", { max: STATE_MAX }),
    u32("numChunks", "num_chunks", "chunks of the job"),
  ],
  sections: [],
};
const NODE_ENTRY: RecordSpec = {
  name: "NodeEntry",
  wire: "node_entry",
  fields: [
    uuid("id", "node_uuid", "node id"),
    u8("role", "role", "NodeRole", { max: 5 }),
    u8("state", "state", "NodeState", { max: 2 }),
    u8("flags", "flags", "NodeFlags bits (1 = raft leader)"),
    u32("slots", "slots", "worker slots (0 for other roles)"),
    u32("freeSlots", "free_slots", "free worker slots"),
    u64("lastSeenMs", "last_seen_ms", "Unix epoch ms of the last message from the node"),
    len("u32", "endpoint_length", "endpoint", "bytes of endpoint"),
    len("u32", "name_length", "name", "bytes of name"),
    len("u32", "detail_length", "detail", "bytes of detail"),
  ],
  sections: [
    text("endpoint", "endpoint", "maxText", 'tcp://HOST:PORT to connect to ("" for a worker)'),
    text("name", "name", "maxText", "keyring name (connect as NAME@endpoint) or worker label"),
    text("detail", "detail", "maxText", 'why it is suspect or dead, "" when alive'),
  ],
};
const STORAGE_ENTRY: RecordSpec = {
  name: "StorageEntry",
  wire: "storage_entry",
  fields: [
    uuid("id", "node_uuid", "node id"),
    u8("state", "state", "NodeState", { max: 2 }),
    u8("flags", "flags", "StorageFlags bits (1 = full, 2 = failing)"),
    u64("capacityBytes", "capacity_bytes", "bytes the node may hold"),
    u64("usedBytes", "used_bytes", "bytes of committed files"),
    u64("files", "files", "committed files"),
    u64("underReplicatedFiles", "under_replicated_files", "files short of replicas"),
    u64("underReplicatedBytes", "under_replicated_bytes", "bytes of those files"),
    u64("lastSeenMs", "last_seen_ms", "Unix epoch ms of its last heartbeat, 0 = none yet"),
    len("u32", "endpoint_length", "endpoint", "bytes of endpoint"),
    len("u32", "detail_length", "detail", "bytes of detail"),
  ],
  sections: [
    text("endpoint", "endpoint", "maxText", "[NAME@]tcp://HOST:PORT to connect to"),
    text("detail", "detail", "maxText", 'why it is suspect, dead, full or failing, "" if not'),
  ],
};
const KEPT_FILE: RecordSpec = {
  name: "KeptFileEntry",
  wire: "kept_file",
  fields: [
    uuid("id", "file_uuid", "file id"),
    u64("size", "size", "size in bytes"),
    u8("replicas", "replicas", "replicas the put asked for"),
    u32("refs", "refs", "live jobs that refer to the file"),
    u64("keptAtMs", "kept_at_ms", "Unix ms of the keep"),
    len("u32", "name_length", "name", "bytes of name"),
  ],
  sections: [text("name", "name", "maxText", "name the file was put under")],
};
const GC_ENTRY: RecordSpec = {
  name: "GcEntry",
  wire: "gc_entry",
  fields: [
    uuid("id", "file_uuid", "file id"),
    u64("ageMs", "age_ms", "ms since the file was last put on the node"),
  ],
  sections: [],
};
const FETCH_COUNT: RecordSpec = {
  name: "FetchCount",
  wire: "fetch_count",
  fields: [uuid("file", "file_uuid", "file id"), u64("count", "count", "file_request count")],
  sections: [],
};

/** Layout of every message type, in code order. */
export const MESSAGE_SPECS: readonly MessageSpec[] = [
  {
    type: MessageType.Error,
    senders: ["master", "balancer", "storage", "worker"],
    name: "ErrorMessage",
    wire: "error",
    base: 33,
    fields: [
      u32("code", "code", "ErrorCode"),
      len("u32", "text_length", "text", "bytes of text"),
      u64("value", "value", "WRONG_OFFSET: offset to resume the upload at; else 0", { ext: true }),
    ],
    sections: [text("text", "text", "maxText", "UTF-8 explanation (NOT_LEADER: leader endpoint)")],
    doc: "Failure reply to any request.",
    flow: "any ROUTER -> requester",
    reply: "none",
  },
  {
    type: MessageType.Ok,
    senders: ["master", "balancer", "storage", "worker"],
    name: "OkMessage",
    wire: "ok",
    base: 33,
    fields: [u64("value", "value", "optional result value, 0 when unused")],
    sections: [],
    doc: "Generic success reply.",
    flow: "any ROUTER -> requester",
    reply: "none",
  },
  {
    type: MessageType.WorkerRequest,
    senders: ["balancer"],
    name: "WorkerRequest",
    wire: "worker_request",
    base: 73,
    fields: [
      uuid("job", "job_uuid", "job id"),
      uuid("programId", "program_uuid", "file id of the program (fetched from storage)"),
      u64("programSize", "program_size", "program size in bytes"),
      len("u64", "num_input_files", "inputFiles", "entries in input_files"),
      u32("chunkIndex", "chunk_index", "chunk to run (0-based)", { ext: true }),
      u32("numChunks", "num_chunks", "chunks in the job", { ext: true, limit: "maxChunks" }),
      len("u64", "argument_length", "argument", "bytes of argument", true),
      u64("timeLimitMs", "time_limit_ms", "kill the program after this, 0 = no limit", {
        ext: true,
      }),
      u32("attempt", "attempt", "attempt number assigned by the master", { ext: true }),
      u64("capExpiryMs", "cap_expiry_ms", "Unix ms until which caps are good", { ext: true }),
      len("u32", "caps_length", "caps", "bytes of caps", true),
      len("u32", "ticket_length", "ticket", "bytes of ticket", true),
      len("u32", "owner_length", "owner", "bytes of owner", true),
      len("u32", "program_cap_length", "programCap", "bytes of program_cap", true),
      u64("epoch", "balancer_epoch", "lease epoch of the placing balancer (0 = no masters)", {
        ext: true,
      }),
      ...limitFields(),
    ],
    sections: [
      list("inputFiles", "input_files", "maxFiles", "files to fetch from storage", FILE_ENTRY),
      bytes("argument", "argument", "maxArgument", "opaque argument passed to the program"),
      bytes("caps", "caps", "maxAuth", "32-byte read capability per input file, in order"),
      bytes("ticket", "ticket", "maxAuth", "placement ticket, echoed in worker_status"),
      text("owner", "owner", "maxText", "keyring name of the job's owner"),
      bytes("programCap", "program_cap", "maxAuth", "32-byte read capability for the program"),
    ],
    doc: "Run one chunk of a job on a worker.",
    flow: "balancer ROUTER -> worker DEALER",
    reply: "worker_request_ack",
  },
  {
    type: MessageType.WorkerRequestAck,
    senders: ["worker"],
    name: "WorkerRequestAck",
    wire: "worker_request_ack",
    base: 54,
    fields: [
      uuid("job", "job_uuid", "job id"),
      u32("chunkIndex", "chunk_index", "chunk index"),
      u32("attempt", "attempt", "attempt number"),
      bool("accepted", "accepted", "1 = accepted, 0 = refused"),
      len("u32", "reason_length", "reason", "bytes of reason"),
    ],
    sections: [text("reason", "reason", "maxText", "UTF-8 refusal reason, empty when accepted")],
    doc: "Worker accepts or refuses a worker_request.",
    flow: "worker DEALER -> balancer ROUTER",
    reply: "none (it is the reply)",
  },
  {
    type: MessageType.WorkerStatus,
    senders: ["worker"],
    name: "WorkerStatus",
    wire: "worker_status",
    base: 42,
    fields: [
      uuid("job", "job_uuid", "job id"),
      u8("state", "state", "ChunkState", { max: STATE_MAX }),
      ...resultFields(true),
      len("u32", "ticket_length", "ticket", "bytes of ticket", true),
    ],
    sections: [
      ...resultSections(),
      bytes("ticket", "ticket", "maxAuth", "the placement ticket of the worker_request"),
    ],
    doc: "Progress or result of one chunk attempt.",
    flow: "worker DEALER -> master ROUTER (leader)",
    reply: "ok (value 1 = this result recorded, 0 = a result was recorded already), or error " +
      "NOT_LEADER / NOT_FOUND (no such job) / BAD_REQUEST (chunk out of range) / FORBIDDEN (no " +
      "valid ticket for this worker's key)",
  },
  {
    type: MessageType.WorkerRegister,
    senders: ["worker"],
    name: "WorkerRegister",
    wire: "worker_register",
    base: 41,
    fields: [
      u32("slots", "slots", "concurrent chunks the worker runs"),
      u32("freeSlots", "free_slots", "slots free now"),
      len("u32", "num_files", "files", "ids in files"),
      len("u32", "label_length", "label", "bytes of label"),
      len("u32", "endpoint_length", "endpoint", "bytes of endpoint", true),
    ],
    sections: [
      ids("files", "files", "maxFiles", "file ids in the worker's cache (16 bytes each)"),
      text("label", "label", "maxText", "UTF-8 hostname / label"),
      text("endpoint", "endpoint", "maxText", "where it serves chunk logs (chunk_log_request)"),
    ],
    doc: "A worker joins the balancer.",
    flow: "worker DEALER -> balancer ROUTER",
    reply: "ok (value = the heartbeat interval to use, ms, as for worker_heartbeat), or error " +
      "FORBIDDEN (the node id is bound to another key) / UNAVAILABLE " +
      "(a standby balancer: try the next endpoint)",
  },
  {
    type: MessageType.WorkerHeartbeat,
    senders: ["worker"],
    name: "WorkerHeartbeat",
    wire: "worker_heartbeat",
    base: 41,
    fields: [
      u32("slots", "slots", "concurrent chunks the worker runs"),
      u32("freeSlots", "free_slots", "slots free now"),
      len("u32", "num_added", "added", "ids in added"),
      len("u32", "num_evicted", "evicted", "ids in evicted"),
    ],
    sections: [
      ids("added", "added", "maxFiles", "file ids cached since the last heartbeat"),
      ids("evicted", "evicted", "maxFiles", "file ids evicted since the last heartbeat"),
    ],
    doc: "Periodic liveness and cache delta. The worker sends it every interval the balancer " +
      "last told it (the value of the ok reply to its last register or heartbeat; 0 = none " +
      "told, e.g. by an older balancer: its own configured interval). The balancer grows the " +
      "interval with the number of workers, to keep the heartbeats of the whole cluster near " +
      "a rate it can serve, and declares a worker dead after 3 told intervals (never sooner " +
      "than its dead-worker timeout) without a message. A worker uses at least its own " +
      "interval and at most 60 s, whatever it is told. When a heartbeat is not answered, the worker " +
      "returns to its own interval until a reply tells it again, so a new primary hears " +
      "from it soon. An older worker that ignores the value keeps its own, shorter interval: " +
      "safe either way.",
    flow: "worker DEALER -> balancer ROUTER",
    reply: "ok (value = the interval to heartbeat at from now on, ms; 0 = keep your own), " +
      "or error NOT_FOUND (the balancer does not know the worker: register again) / " +
      "FORBIDDEN (the node id is bound to another key) / UNAVAILABLE (a standby)",
  },
  {
    type: MessageType.ChunkFinished,
    senders: ["worker"],
    name: "ChunkFinished",
    wire: "chunk_finished",
    base: 50,
    fields: [
      uuid("job", "job_uuid", "job id"),
      u32("chunkIndex", "chunk_index", "chunk index"),
      u32("attempt", "attempt", "attempt number"),
      u8("state", "state", "final ChunkState", { max: STATE_MAX }),
    ],
    sections: [],
    doc: "A chunk attempt ended on the worker; its slot is free again.",
    flow: "worker DEALER -> balancer ROUTER",
    reply: "ok (value 1 = fresh, 0 = stale: ignored), or error FORBIDDEN (placed on another " +
      "worker's key) / UNAVAILABLE (a standby balancer)",
  },
  {
    type: MessageType.FileRequest,
    senders: ["client", "worker", "storage", "master"],
    name: "FileRequest",
    wire: "file_request",
    base: 41,
    fields: [
      uuid("file", "file_uuid", "file id"),
      u64("offset", "offset", "first byte wanted", { ext: true }),
      u64("maxLength", "max_length", "most bytes wanted, 0 = server default chunk", {
        ext: true,
      }),
      u64("capExpiryMs", "cap_expiry_ms", "Unix ms until which cap is good", { ext: true }),
      len("u32", "cap_length", "cap", "bytes of cap", true),
    ],
    sections: [bytes("cap", "cap", "maxAuth", "read capability (workers), else empty")],
    doc: "Read (part of) a stored file.",
    flow: "any DEALER -> storage ROUTER",
    reply: "file_response, or error NOT_FOUND (absent, or not the client's) / BAD_REQUEST " +
      "(offset > length) / FORBIDDEN (a worker or master without a valid read capability)",
  },
  {
    type: MessageType.FileResponse,
    senders: ["storage"],
    name: "FileResponse",
    wire: "file_response",
    base: 49,
    fields: [
      uuid("file", "file_uuid", "file id"),
      u64("fileLength", "file_length", "total size of the file"),
      u64("offset", "offset", "offset of the first payload byte", { ext: true }),
    ],
    sections: [rest("data", "data", "maxData", "file bytes at offset: the rest of the frame")],
    doc: "Bytes of a stored file.",
    flow: "storage ROUTER -> requester",
    reply: "none",
  },
  {
    type: MessageType.FilePut,
    senders: ["client", "worker", "storage"],
    name: "FilePut",
    wire: "file_put",
    base: 61,
    fields: [
      uuid("file", "file_uuid", "file id = first 16 bytes of SHA-256 of the whole file"),
      u64("totalLength", "total_length", "size of the whole file"),
      u64("offset", "offset", "offset of the first payload byte"),
      u32("flags", "flags", "FilePutFlags bits (1 = last chunk)"),
      len("u32", "owner_length", "owner", "bytes of owner", true),
      u8("replicas", "replicas", "replicas the file should have, 0 = the cluster default", {
        ext: true,
        max: 7,
      }),
    ],
    sections: [
      text(
        "owner",
        "owner",
        "maxText",
        "user the file is stored for (workers); a storage node's copy: the owners, \\n-separated",
      ),
      rest("data", "data", "maxData", "file bytes at offset: the rest of the frame"),
    ],
    doc: "Upload one chunk of a file; chunks are sent in order.",
    flow: "client/worker DEALER -> storage ROUTER",
    reply: "file_put_ack, or error WRONG_OFFSET (value = where to resume) / CONFLICT (bytes " +
      "do not match the id) / BAD_REQUEST / NO_SPACE (nothing kept)",
  },
  {
    type: MessageType.FilePutAck,
    senders: ["storage"],
    name: "FilePutAck",
    wire: "file_put_ack",
    base: 50,
    fields: [
      uuid("file", "file_uuid", "file id"),
      u64("durableLength", "durable_length", "bytes stored durably so far"),
      bool("committed", "committed", "1 = whole file verified and stored"),
    ],
    sections: [],
    doc: "Upload progress.",
    flow: "storage ROUTER -> uploader",
    reply: "none",
  },
  {
    type: MessageType.FileStat,
    senders: ["client", "worker", "master", "storage"],
    name: "FileStat",
    wire: "file_stat",
    base: 41,
    fields: [
      uuid("file", "file_uuid", "file id"),
      len("u32", "user_length", "user", "bytes of user", true),
    ],
    sections: [text("user", "user", "maxText", "masters: answer for this user; else empty")],
    doc: "Does a file exist?",
    flow: "any DEALER -> storage ROUTER",
    reply: "file_stat_response",
  },
  {
    type: MessageType.FileStatResponse,
    senders: ["storage"],
    name: "FileStatResponse",
    wire: "file_stat_response",
    base: 50,
    fields: [
      uuid("file", "file_uuid", "file id"),
      bool("exists", "exists", "1 = committed file present"),
      u64("length", "length", "file size, 0 when absent"),
    ],
    sections: [],
    doc: "Answer to file_stat.",
    flow: "storage ROUTER -> requester",
    reply: "none",
  },
  {
    type: MessageType.StorageStatsRequest,
    senders: ["admin", "master"],
    name: "StorageStatsRequest",
    wire: "storage_stats_request",
    base: 25,
    fields: [],
    sections: [],
    doc: "Ask storage for its counters.",
    flow: "any DEALER -> storage ROUTER",
    reply: "storage_stats",
  },
  {
    type: MessageType.StorageStats,
    senders: ["storage"],
    name: "StorageStats",
    wire: "storage_stats",
    base: 77,
    fields: [
      u64("gets", "gets", "file_request messages served"),
      u64("getBytes", "get_bytes", "bytes sent in file_response"),
      u64("puts", "puts", "file_put messages accepted"),
      u64("putBytes", "put_bytes", "bytes received in file_put"),
      u64("files", "files", "committed files stored"),
      u64("storedBytes", "stored_bytes", "bytes of committed files"),
      len("u32", "num_fetch_counts", "fetchCounts", "entries in fetch_counts"),
    ],
    sections: [
      list("fetchCounts", "fetch_counts", "maxEntries", "per-file fetch counts", FETCH_COUNT),
    ],
    doc: "Storage counters since start.",
    flow: "storage ROUTER -> requester",
    reply: "none",
  },
  {
    type: MessageType.JobSubmit,
    senders: ["client"],
    name: "JobSubmit",
    wire: "job_submit",
    base: 101,
    fields: [
      uuid("client", "client_uuid", "submitting client's id"),
      u64("sequence", "sequence", "client's request sequence; retries reuse it"),
      u32("numChunks", "num_chunks", "chunks to run (>= 1)", { limit: "maxChunks" }),
      u64("timeLimitMs", "time_limit_ms", "per-chunk time limit, 0 = none"),
      uuid("programId", "program_uuid", "file id of the program, stored by the submitter"),
      u64("programSize", "program_size", "program size (masters use storage's)"),
      len("u64", "argument_length", "argument", "bytes of argument"),
      len("u32", "num_input_files", "inputFiles", "entries in input_files"),
      len("u32", "name_length", "programName", "bytes of program_name"),
      ...limitFields(),
      u32("retries", "retries", "times a failed chunk runs again (own budget per chunk)", {
        ext: true,
        limit: "maxChunks",
      }),
      u32("maxFailedChunks", "max_failed_chunks", "stop the job after this many failed, 0 = no", {
        ext: true,
        limit: "maxChunks",
      }),
    ],
    sections: [
      bytes("argument", "argument", "maxArgument", "opaque argument"),
      list("inputFiles", "input_files", "maxFiles", "input files (already stored)", FILE_ENTRY),
      text("programName", "program_name", "maxText", "UTF-8 program name for display"),
    ],
    doc: "Submit a job (exactly-once per client_uuid + sequence).",
    flow: "client DEALER -> master ROUTER",
    reply: "job_submit_ack, or error NOT_LEADER (text = leader endpoint) / BAD_REQUEST / " +
      "TOO_LARGE (argument or program over the masters' limits) / NOT_FOUND (the program or an " +
      "input is not on storage for the submitter) / UNAVAILABLE (storage did not answer)",
  },
  {
    type: MessageType.JobSubmitAck,
    senders: ["master"],
    name: "JobSubmitAck",
    wire: "job_submit_ack",
    base: 50,
    fields: [
      uuid("job", "job_uuid", "id of the (new or earlier) job"),
      u64("sequence", "sequence", "echo of job_submit.sequence"),
      bool("duplicate", "duplicate", "1 = this submission was already accepted before"),
    ],
    sections: [],
    doc: "Job accepted (committed in the Raft log).",
    flow: "master ROUTER -> client",
    reply: "none",
  },
  {
    type: MessageType.JobStatusRequest,
    senders: ["client"],
    name: "JobStatusRequest",
    wire: "job_status_request",
    base: 41,
    fields: [uuid("job", "job_uuid", "job id")],
    sections: [],
    doc: "Ask for a job's state.",
    flow: "client DEALER -> master ROUTER",
    reply: "job_status_response, or error NOT_FOUND / FORBIDDEN (another user's job) / " +
      "NOT_LEADER",
  },
  {
    type: MessageType.JobStatusResponse,
    senders: ["master"],
    name: "JobStatusResponse",
    wire: "job_status_response",
    base: 66,
    fields: [
      uuid("job", "job_uuid", "job id"),
      u8("state", "state", "JobState", { max: STATE_MAX }),
      u32("numChunks", "num_chunks", "chunks of the job"),
      u32("done", "done", "chunks succeeded"),
      u32("failed", "failed", "chunks failed for good"),
      u32("running", "running", "chunks running"),
      u32("queued", "queued", "chunks waiting"),
      len("u32", "num_records", "chunks", "entries in chunks"),
    ],
    sections: [list("chunks", "chunks", "maxChunks", "per-chunk records", CHUNK_RECORD)],
    doc: "A job's state.",
    flow: "master ROUTER -> client",
    reply: "none",
  },
  {
    type: MessageType.JobListRequest,
    senders: ["client"],
    name: "JobListRequest",
    wire: "job_list_request",
    base: 25,
    fields: [],
    sections: [],
    doc: "List jobs.",
    flow: "client DEALER -> master ROUTER",
    reply: "job_list_response, or error NOT_LEADER",
  },
  {
    type: MessageType.JobListResponse,
    senders: ["master"],
    name: "JobListResponse",
    wire: "job_list_response",
    base: 29,
    fields: [len("u32", "num_jobs", "jobs", "entries in jobs")],
    sections: [list("jobs", "jobs", "maxEntries", "jobs", JOB_LIST_ENTRY)],
    doc: "Known jobs.",
    flow: "master ROUTER -> client",
    reply: "none",
  },
  {
    type: MessageType.JobDispatch,
    senders: ["master"],
    name: "JobDispatch",
    wire: "job_dispatch",
    base: 93,
    fields: [
      uuid("job", "job_uuid", "job id"),
      u32("numChunks", "num_chunks", "chunks of the job", { limit: "maxChunks" }),
      u64("timeLimitMs", "time_limit_ms", "per-chunk time limit, 0 = none"),
      uuid("programId", "program_uuid", "file id of the program"),
      u64("programSize", "program_size", "program size in bytes"),
      len("u64", "argument_length", "argument", "bytes of argument"),
      len("u32", "num_input_files", "inputFiles", "entries in input_files"),
      len("u32", "num_dispatch", "chunks", "entries in chunks"),
      len("u32", "owner_length", "owner", "bytes of owner", true),
      ...limitFields(),
    ],
    sections: [
      bytes("argument", "argument", "maxArgument", "opaque argument"),
      list("inputFiles", "input_files", "maxFiles", "input files", FILE_ENTRY),
      list("chunks", "chunks", "maxChunks", "chunks to run with attempts", CHUNK_ATTEMPT),
      text("owner", "owner", "maxText", "keyring name of the job's owner"),
    ],
    doc: "Hand chunks of a job to the balancer for placement.",
    flow: "master DEALER -> balancer ROUTER",
    reply: "ok (value = chunks newly queued), or error UNAVAILABLE (not the lease holder) / " +
      "BAD_REQUEST (time limit or chunks out of range)",
  },
  {
    type: MessageType.JobRemove,
    senders: ["client"],
    name: "JobRemove",
    wire: "job_remove",
    base: 41,
    fields: [uuid("job", "job_uuid", "job id")],
    sections: [],
    doc: "Remove a finished job now (its owner or an admin), as --job-retention would later; " +
      "its status is NOT_FOUND from then on, and its inputs and outputs lose the job's references.",
    flow: "client DEALER -> master ROUTER (the leader)",
    reply: "ok (value 1 = removed by this request, 0 = already gone), or error NOT_FOUND / " +
      "FORBIDDEN (another user's job) / BAD_REQUEST (the job is still running: remove it once " +
      "it has finished) / NOT_LEADER",
  },
  {
    type: MessageType.JobCancel,
    senders: ["client", "master", "balancer"],
    name: "JobCancel",
    wire: "job_cancel",
    base: 45,
    fields: [
      uuid("job", "job_uuid", "job id"),
      len("u32", "num_chunks", "chunks", "entries in chunks"),
    ],
    sections: [list("chunks", "chunks", "maxChunks", "chunks to cancel; none = all", CHUNK_INDEX)],
    doc: "Cancel a job's chunks (its owner or an admin). The masters commit the cancel (the " +
      "chunks are final: cancelled, never placed again) and send it on to the primary balancer, " +
      "which drops them from its queue and sends it to each worker running one; the worker kills " +
      "every process of those chunks. Idempotent: a chunk already final stays as it is.",
    flow: "client DEALER -> master ROUTER (the leader) -> balancer ROUTER -> worker DEALER",
    reply: "ok (value = chunks cancelled by this request), or error NOT_FOUND / FORBIDDEN " +
      "(another user's job) / BAD_REQUEST (a chunk index out of range) / NOT_LEADER",
  },
  {
    type: MessageType.NodeListRequest,
    senders: ["client", "master"],
    name: "NodeListRequest",
    wire: "node_list_request",
    base: 25,
    fields: [],
    sections: [],
    doc: "List nodes.",
    flow: "client DEALER -> master ROUTER",
    reply: "node_list_response",
  },
  {
    type: MessageType.NodeListResponse,
    senders: ["master"],
    name: "NodeListResponse",
    wire: "node_list_response",
    base: 29,
    fields: [len("u32", "num_nodes", "nodes", "entries in nodes")],
    sections: [list("nodes", "nodes", "maxEntries", "nodes", NODE_ENTRY)],
    doc: "Known nodes.",
    flow: "master ROUTER -> client",
    reply: "none",
  },
  {
    type: MessageType.ClusterChange,
    senders: ["admin"],
    name: "ClusterChange",
    wire: "cluster_change",
    base: 30,
    fields: [
      u8("op", "op", "ClusterOp: 1 add master, 2 remove master, 3 transfer leadership", { max: 3 }),
      len("u32", "member_length", "member", "bytes of member"),
    ],
    sections: [text("member", "member", "maxText", "Raft member id NAME@tcp://HOST:PORT")],
    doc: "Add or remove a master (one at a time, committed through Raft) or hand over leadership.",
    flow: "client DEALER -> master ROUTER (the leader)",
    reply: "ok (once the change is committed), or error NOT_LEADER / BAD_REQUEST (a lone " +
      "master, or a malformed member id) / CONFLICT (already a member) / NOT_FOUND (not a member)",
  },
  {
    type: MessageType.ChunkLogRequest,
    senders: ["client", "master"],
    name: "ChunkLogRequest",
    wire: "chunk_log_request",
    base: 58,
    fields: [
      uuid("job", "job_uuid", "job id"),
      u32("chunkIndex", "chunk_index", "chunk index", { limit: "maxChunks" }),
      u8("stream", "stream", "1 = stdout, 2 = stderr", { max: 2 }),
      u64("offset", "offset", "first byte wanted"),
      u32("maxLength", "max_length", "most bytes wanted, 0 = 64 KiB", { limit: "maxData" }),
    ],
    sections: [],
    doc: "Read a running chunk's stdout or stderr from the worker running it (its owner, an " +
      "admin, or a master: the dashboard's log links). The worker to ask is chunk_record.worker_uuid, its endpoint that node's in " +
      "node_list_response. Once the chunk has ended, its stdout is an output file on storage and " +
      "its stderr tail is in chunk_record.",
    flow: "client DEALER -> worker ROUTER",
    reply: "chunk_log, or error NOT_FOUND (the chunk does not run here) / FORBIDDEN (another " +
      "user's job)",
  },
  {
    type: MessageType.ChunkLog,
    senders: ["worker"],
    name: "ChunkLog",
    wire: "chunk_log",
    base: 70,
    fields: [
      uuid("job", "job_uuid", "job id"),
      u32("chunkIndex", "chunk_index", "chunk index"),
      u32("attempt", "attempt", "the attempt running (a retry's log starts at 0)"),
      u64("offset", "offset", "offset of data"),
      u64("totalLength", "total_length", "bytes of the stream written so far"),
      bool("running", "running", "1 while the chunk still runs"),
      len("u32", "data_length", "data", "bytes of data"),
    ],
    sections: [bytes("data", "data", "maxData", "the log's bytes at offset")],
    doc: "A piece of a running chunk's log.",
    flow: "worker ROUTER -> client",
    reply: "none",
  },
  {
    type: MessageType.RaftMessage,
    senders: ["master"],
    name: "RaftMessage",
    wire: "raft_message",
    base: 25,
    fields: [],
    sections: [rest("data", "data", "maxRaft", "opaque Raft message: the rest of the frame")],
    doc: "Raft traffic between masters; one-way, never answered (the exception to request/reply).",
    flow: "master DEALER -> master ROUTER",
    reply: "none (one-way)",
  },
  {
    type: MessageType.BalancerLease,
    senders: ["balancer"],
    name: "BalancerLease",
    wire: "balancer_lease",
    base: 37,
    fields: [
      u64("epoch", "epoch", "lease epoch the sender holds, 0 = none"),
      len("u32", "endpoint_length", "endpoint", "bytes of endpoint"),
    ],
    sections: [text("endpoint", "endpoint", "maxText", "sender's NAME@tcp://HOST:PORT")],
    doc:
      "Ask for the primary balancer lease, or renew it. The leader grants a new epoch (through " +
      "the Raft log) only once the holder's lease has run out by its own clock; a renewal of the " +
      "current epoch by its holder is confirmed by a quorum heartbeat round, not logged. The " +
      "holder may act as primary for duration_ms counted from when it sent this request.",
    flow: "balancer DEALER -> master ROUTER (the leader)",
    reply: "balancer_lease_reply, or error NOT_LEADER / UNAVAILABLE",
  },
  {
    type: MessageType.BalancerLeaseReply,
    senders: ["master"],
    name: "BalancerLeaseReply",
    wire: "balancer_lease_reply",
    base: 58,
    fields: [
      u64("epoch", "epoch", "current lease epoch, 0 = nobody holds it yet"),
      uuid("holder", "holder_uuid", "node id of the holder"),
      u32("durationMs", "duration_ms", "lease length, ms, from when the request was sent"),
      bool("granted", "granted", "1 = the asker holds the lease"),
      len("u32", "endpoint_length", "endpoint", "bytes of endpoint"),
    ],
    sections: [text("endpoint", "endpoint", "maxText", "holder's NAME@tcp://HOST:PORT")],
    doc: "The lease as the leader sees it: granted to the asker, or held by another balancer " +
      "(the asker then follows that one as a standby).",
    flow: "master ROUTER -> balancer",
    reply: "none",
  },
  {
    type: MessageType.BalancerSync,
    senders: ["balancer"],
    name: "BalancerSync",
    wire: "balancer_sync",
    base: 53,
    fields: [
      uuid("stream", "stream_uuid", "event stream followed, nil = none yet"),
      u64("after", "after", "last event sequence number applied"),
      u32("waitMs", "wait_ms", "the reply may wait this long for new events, ms"),
    ],
    sections: [],
    doc: "A standby balancer pulls the primary's scheduler events (long poll). A pull also " +
      "acknowledges every event up to `after`: while a standby follows, the primary pushes a " +
      "placement to a worker only once the standby holds it.",
    flow: "balancer DEALER -> balancer ROUTER (the lease holder)",
    reply: "balancer_sync_reply, or error UNAVAILABLE (not the primary)",
  },
  {
    type: MessageType.BalancerSyncReply,
    senders: ["balancer"],
    name: "BalancerSyncReply",
    wire: "balancer_sync_reply",
    base: 54,
    fields: [
      uuid("stream", "stream_uuid", "the primary's event stream id"),
      u64("firstSeq", "first_seq", "sequence number of the first event in body"),
      bool("snapshot", "snapshot", "1 = body holds a snapshot at first_seq - 1"),
      len("u32", "body_length", "body", "bytes of body"),
    ],
    sections: [bytes("body", "body", "maxRaft", "JSON snapshot and events (balancer-internal)")],
    doc: "Scheduler state for a standby. The body is a JSON document private to balancers of " +
      "one version (roles/balancer/replication.ts); clients never see it.",
    flow: "balancer ROUTER -> balancer",
    reply: "none",
  },
  {
    type: MessageType.StorageHeartbeat,
    senders: ["storage"],
    name: "StorageHeartbeat",
    wire: "storage_heartbeat",
    base: 74,
    fields: [
      u8("flags", "flags", "StorageFlags bits (1 = full, 2 = failing)"),
      u64("capacityBytes", "capacity_bytes", "bytes the node may hold"),
      u64("usedBytes", "used_bytes", "bytes of committed files"),
      u64("files", "files", "committed files"),
      u64("underReplicatedFiles", "under_replicated_files", "files short of replicas"),
      u64("underReplicatedBytes", "under_replicated_bytes", "bytes of those files"),
      len("u32", "endpoint_length", "endpoint", "bytes of endpoint"),
      len("u32", "detail_length", "detail", "bytes of detail"),
    ],
    sections: [
      text("endpoint", "endpoint", "maxText", "sender's [NAME@]tcp://HOST:PORT"),
      text("detail", "detail", "maxText", 'why the node is full or failing, "" if not'),
    ],
    doc: "A storage node registers and stays a member: sent every second to the leader. A node " +
      "silent for the repair delay is dead: its files are copied to others until each is back at " +
      "its replica count.",
    flow: "storage DEALER -> master ROUTER (the leader)",
    reply: "storage_nodes, or error NOT_LEADER / FORBIDDEN (endpoint not named for the key)",
  },
  {
    type: MessageType.StorageNodesRequest,
    senders: ["client", "worker", "storage", "master", "balancer"],
    name: "StorageNodesRequest",
    wire: "storage_nodes_request",
    base: 25,
    fields: [],
    sections: [],
    doc: "Ask for the storage membership (to place a put, or find a file's replicas).",
    flow: "any DEALER -> master ROUTER (the leader)",
    reply: "storage_nodes, or error NOT_LEADER",
  },
  {
    type: MessageType.StorageNodes,
    senders: ["master"],
    name: "StorageNodes",
    wire: "storage_nodes",
    base: 38,
    fields: [
      u8("replicas", "replicas", "replicas a file gets when its put names none", { max: 7 }),
      u64("repairAfterMs", "repair_after_ms", "a node silent this long is dead, ms"),
      len("u32", "num_nodes", "nodes", "entries in nodes"),
    ],
    sections: [list("nodes", "nodes", "maxEntries", "storage nodes", STORAGE_ENTRY)],
    doc: "The storage membership as the leader sees it. Placement is computed from it by " +
      "everyone alike: a file's replicas belong on the first R healthy nodes in the order of " +
      'rendezvous hashing (docs/architecture.md, "The storage tier").',
    flow: "master ROUTER -> requester",
    reply: "none",
  },
  {
    type: MessageType.FileKeep,
    senders: ["client"],
    name: "FileKeep",
    wire: "file_keep",
    base: 31,
    fields: [
      u8("op", "op", "FileKeepOp: 1 keep, 2 unkeep", { max: 2 }),
      u8("replicas", "replicas", "replicas the files were put with (keep)", { max: 7 }),
      len("u32", "num_files", "files", "entries in files", false),
    ],
    sections: [list("files", "files", "maxFiles", "the files", FILE_ENTRY)],
    doc:
      "Keep stored files for the sender's user until it removes them (`dsys put` keeps what it " +
      "stored; `dsys rm FILE` unkeeps). A file nothing keeps and no live job refers to is " +
      "deleted from every replica after the masters' --delete-grace. The keep is committed " +
      "through the Raft log before the reply; keeping a file the cluster deleted makes it live " +
      "again (the sender has just stored it again).",
    flow: "client DEALER -> master ROUTER (the leader)",
    reply: "ok (value = keeps added or removed), or error NOT_LEADER / TOO_LARGE (over the " +
      "keep limits) / FORBIDDEN",
  },
  {
    type: MessageType.FileListRequest,
    senders: ["client"],
    name: "FileListRequest",
    wire: "file_list_request",
    base: 25,
    fields: [],
    sections: [],
    doc: "List the files the sender's user keeps.",
    flow: "client DEALER -> master ROUTER (the leader)",
    reply: "file_list, or error NOT_LEADER",
  },
  {
    type: MessageType.FileList,
    senders: ["master"],
    name: "FileList",
    wire: "file_list",
    base: 29,
    fields: [len("u32", "num_files", "files", "entries in files")],
    sections: [list("files", "files", "maxEntries", "kept files, newest first", KEPT_FILE)],
    doc: "The files a user keeps, with size, replicas and references from live jobs.",
    flow: "master ROUTER -> client",
    reply: "none",
  },
  {
    type: MessageType.FileGc,
    senders: ["storage"],
    name: "FileGc",
    wire: "file_gc",
    base: 29,
    fields: [len("u32", "num_files", "files", "entries in files")],
    sections: [list("files", "files", "maxFiles", "files held, with their age", GC_ENTRY)],
    doc: "A storage node offers the files it holds for collection (in batches, every " +
      "--gc-every). The leader answers with those that nothing references and that the " +
      "cluster deleted: first it commits a delete of the ones unreferenced for the grace.",
    flow: "storage DEALER -> master ROUTER (the leader)",
    reply: "file_gc_reply, or error NOT_LEADER / TOO_LARGE",
  },
  {
    type: MessageType.FileGcReply,
    senders: ["master"],
    name: "FileGcReply",
    wire: "file_gc_reply",
    base: 37,
    fields: [
      u64("graceMs", "grace_ms", "a file put again within this long is kept, ms"),
      len("u32", "num_ids", "ids", "entries in ids"),
    ],
    sections: [ids("ids", "ids", "maxFiles", "files to delete")],
    doc: "Files the cluster deleted: the storage node deletes its replica of each, unless the " +
      "file was put on it within grace_ms (a put racing the delete wins).",
    flow: "master ROUTER -> storage",
    reply: "none",
  },
];

/** MESSAGE_SPECS indexed by type code (undefined for unknown codes). */
export const SPEC_BY_TYPE: readonly (MessageSpec | undefined)[] = (() => {
  const a: (MessageSpec | undefined)[] = new Array(256).fill(undefined);
  for (const s of MESSAGE_SPECS) a[s.type] = s;
  return a;
})();

/** Full (current) fixed header size of a message spec, generic part included. */
export function headerSize(spec: { fields: readonly FieldSpec[] }): number {
  return GENERIC_HEADER_SIZE + spec.fields.reduce((n, x) => n + FIELD_SIZE[x.kind], 0);
}

/** Fixed size of a record's field part. */
export function recordFixedSize(rec: RecordSpec): number {
  return rec.fields.reduce((n, x) => n + FIELD_SIZE[x.kind], 0);
}
