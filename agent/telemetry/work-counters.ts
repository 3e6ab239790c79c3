// The box's work as telemetry counts it: what serving did (bytes, requests, refused orders, bytes sent but not yet
// receipted) and what the task queue holds (queued, running, failed). The serve and tasks code report into one
// WorkCounters that agent.ts makes and registers as a counter source; neither knows telemetry or MQTT. Counts
// since the agent started (like proofs_passed); queued/running/lag are the state now.

import type { TelemetryCounters } from "./collector.js";

/** What serving reports (agent/serve). */
export interface ServeCounters {
  /** Bytes of a response body written to a client (sent, not merely queued for a refused request). */
  served(bytes: number): void;
  /** One HTTP request handled, served or refused. */
  request(): void;
  /** One request refused for its order (forged, expired, wrong device or object, over maxBytes, past the window). */
  orderRefused(): void;
  /** Bytes sent but not yet receipted, summed over the open orders, now. */
  setReceiptLag(bytes: number): void;
}

/** What the task queue reports (agent/tasks). */
export interface TaskCounters {
  /** Tasks accepted and waiting, and tasks running, now. */
  setTasks(queued: number, running: number): void;
  /** One task ended with task.failed. */
  taskFailed(): void;
}

export class WorkCounters implements ServeCounters, TaskCounters {
  private servedBytes = 0;
  private requests = 0;
  private ordersRefused = 0;
  private receiptLagBytes = 0;
  private tasksQueued = 0;
  private tasksRunning = 0;
  private tasksFailed = 0;

  served(bytes: number): void {
    if (bytes > 0) this.servedBytes += bytes;
  }

  request(): void {
    this.requests++;
  }

  orderRefused(): void {
    this.ordersRefused++;
  }

  setReceiptLag(bytes: number): void {
    this.receiptLagBytes = Math.max(0, bytes);
  }

  setTasks(queued: number, running: number): void {
    this.tasksQueued = Math.max(0, queued);
    this.tasksRunning = Math.max(0, running);
  }

  taskFailed(): void {
    this.tasksFailed++;
  }

  /** The counter source agent.ts hands the collector. */
  telemetryCounters(): TelemetryCounters {
    return {
      served_bytes: this.servedBytes,
      requests: this.requests,
      orders_refused: this.ordersRefused,
      receipt_lag_bytes: this.receiptLagBytes,
      tasks_queued: this.tasksQueued,
      tasks_running: this.tasksRunning,
      tasks_failed: this.tasksFailed,
    };
  }
}
