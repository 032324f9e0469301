/**
 * The part of the front-end client the VT-d model talks to the host through: typed requests by
 * message name (vhost/roles/frontend.ts). Unit tests substitute a recording fake.
 */
import type { FrontendClient } from '../../vhost/roles/frontend.js';

export type HostPort = Pick<FrontendClient, 'call'>;
