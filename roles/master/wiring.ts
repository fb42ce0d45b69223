/**
 * How a master's parts are joined, shared by roles/master/main.ts and the cluster simulation
 * (tests/sim/cluster/), so that the simulator runs the same wiring as a real master: the Raft
 * state machine over a swappable JobTable, and the request handler that routes `raft_message`
 * to the Raft member and everything else to the MasterService.
 * @module
 */
import { RequestError } from "../../lib/rpc.ts";
import type { Handler } from "../../lib/rpc.ts";
import { ErrorCode, MessageType } from "../../wire/mod.ts";
import { decodeCommand } from "./commands.ts";
import type { JobTable } from "./job_table.ts";
import type { RaftGroup, StateMachine } from "./raft_group.ts";
import type { MasterService } from "./service.ts";
import { decodeSnapshot, encodeSnapshot } from "./snapshot.ts";

/** The job table a master serves from: a snapshot restore replaces it. */
export interface TableHolder {
  table: JobTable;
  /** Called after a restore replaced `table` (the service must serve the new one). */
  onRestore?: (table: JobTable) => void;
}

/** The replicated state machine: commands applied to the holder's table; snapshots of it. */
export function tableStateMachine(h: TableHolder): StateMachine {
  return {
    apply: (data) => h.table.apply(decodeCommand(data)),
    snapshot: () => encodeSnapshot(h.table),
    checkSnapshot: (data) => void decodeSnapshot(data),
    restore: (data) => {
      h.table = decodeSnapshot(data);
      h.onRestore?.(h.table);
    },
  };
}

/**
 * The master's request handler: `raft_message` to the Raft member (from master keys only, and
 * the key's name must be the member the message says it is from), the rest to the service.
 */
export function masterHandler(
  raft: () => RaftGroup | undefined,
  service: () => MasterService | undefined,
): Handler {
  return (msg, _peer, from) => {
    if (msg.type === MessageType.RaftMessage) {
      // rpc admits only master keys (the schema's senders); checked here too, as Raft trusts it.
      if (from && from.role !== "master") {
        throw new RequestError(
          ErrorCode.Forbidden,
          `a ${from.role} key may not send raft_message to a master`,
        );
      }
      // The authenticated key's name must be the member the message says it is from.
      raft()?.receive(msg.data, from?.name);
      return null;
    }
    const s = service();
    if (!s) throw new RequestError(ErrorCode.Unavailable, "master is starting");
    return s.handle(msg, from);
  };
}
