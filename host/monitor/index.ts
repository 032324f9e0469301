/**
 * The dashboard (docs/design.md §6): `startMonitor(source, options)` serves the page and the live
 * WebSocket for anything that implements `MonitorSource`.
 */
export { startMonitor, WS_PATH } from './server.js';
export {
  CONTROL_ACTIONS,
  COUNTER_NAMES,
  type CounterName,
  type CounterSet,
  type MonitorControlAction,
  type MonitorHandle,
  type MonitorOptions,
  type MonitorSource,
  type MonitorStats,
} from './types.js';
export { TraceCounters } from './trace-counters.js';
export { buildSummary, buildPasidPage, buildVmTopology, countPasids, zeroCounters } from './summary.js';
export { buildTopology, topologyCounts, TOPOLOGY_COLUMNS, type Topology, type TopologyCounts, type TopologyEdge, type TopologyNode } from './topology.js';
export { syntheticSnapshot, type SyntheticOptions } from './synthetic.js';
export { isLoopbackHost, MIN_TOKEN_LENGTH } from './access.js';
export * from './protocol.js';
export { CHART_COUNTERS, CHART_HISTORY_MS, ChartHistory, type ChartHistorySnapshot, type ChartRow, type ChartSample } from './chart-history.js';
