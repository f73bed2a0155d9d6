// Runs one simple Query on an upstream connection the gateway owns (not a client's): used to
// reset pooled backends and to read the target's catalog. Rows come back as text cells.
import { query } from '../codec/encode.ts';
import { Backend } from '../codec/protocol.ts';
import { decodeDataRow, decodeErrorFields, decodeParameterStatus } from '../codec/decode.ts';
import { HandshakeReader } from '../handshake-reader.ts';
import type { UpstreamConnection } from './login.ts';

const TEXT: readonly number[] = [0];
const MAX_MESSAGE = 1 << 20;

export async function simpleQuery(conn: UpstreamConnection, sql: string, timeoutMs: number): Promise<Array<Array<string | null>>> {
  const reader = new HandshakeReader(conn.stream, 4 * MAX_MESSAGE);
  const deadline = Date.now() + timeoutMs;
  const rows: Array<Array<string | null>> = [];
  try {
    conn.stream.write(query(sql));
    let failure: string | null = null;
    for (;;) {
      const { type, body } = await reader.readMessage(deadline, MAX_MESSAGE);
      if (type === Backend.ErrorResponse) failure = decodeErrorFields(body, 0, body.length).message;
      else if (type === Backend.DataRow) rows.push(decodeDataRow(body, 0, body.length, TEXT, MAX_MESSAGE).cells);
      else if (type === Backend.ParameterStatus) {
        const p = decodeParameterStatus(body, 0, body.length);
        conn.parameters.set(p.name, p.value);
      } else if (type === Backend.ReadyForQuery) {
        conn.txStatus = body[0];
        break;
      }
    }
    if (failure) throw new Error(`${sql}: ${failure}`);
    if (reader.detach().length > 0) throw new Error('unexpected data after the query');
    return rows;
  } finally {
    reader.detach();
  }
}
