// Secrets known by what stands before them rather than by their shape: a password in SQL
// (ALTER ROLE … PASSWORD '…', CREATE USER … PASSWORD, IDENTIFIED BY, SET app.token = '…'), in a
// command line (curl -H 'Authorization: Bearer …', --password=…, PGPASSWORD=…, -u user:pass,
// sshpass -p …). Used with the catalogue wherever text is recorded; the value (only) is masked.
// Same bounds as the catalogue: lookbehind starts, bounded quantifiers, literal-or-class branches.
import type { Detector, Finding } from './detectors.ts';

interface Rule {
  /** Names the rule in records of what was masked. */
  name: string;
  pattern: RegExp;
  /** Groups holding the value (the first that matched is masked). */
  groups: number[];
  /** Rejects a value (placeholders, empty). */
  validate?: (value: string) => boolean;
}

/** A quoted SQL literal (with '' escapes), an E'' literal, or a dollar-quoted one. */
const SQL_LITERAL = String.raw`(?:[Ee]'((?:[^'\\]|''|\\[\s\S]){0,4096})'|'((?:[^']|''){0,4096})'|\$([A-Za-z_0-9]{0,16})\$([^$]{0,4096})\$\3\$)`;
/** A value on a command line: quoted, or a word. */
const CLI_VALUE = String.raw`(?:'([^'\r\n]{1,1024})'|"([^"\r\n]{1,1024})"|([^\s'";&|<>)]{1,1024}))`;
/** Words that make a name's value secret (settings, variables, options). */
const SECRET_WORD = String.raw`(?:password|passwd|passphrase|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|credentials?|auth[_-]?key)`;
/** A name holding such a word (anchored where a pattern may start anywhere: set_config's first argument). */
const SECRET_NAME = String.raw`[A-Za-z0-9_.-]{0,64}${SECRET_WORD}[A-Za-z0-9_.-]{0,64}`;
/** The rest of a name after its secret word. Patterns start at the word (irregexp finds literals fast; a name class first would be tried at every word). */
const NAME_REST = String.raw`[A-Za-z0-9_.-]{0,64}`;

function notPlaceholder(v: string): boolean {
  return v.length > 0 && !/^(?:\$\{?[A-Za-z_]|%[sdv]$|\?$|\*+$|\[(?:masked|hash|hidden)|:[A-Za-z_0-9]+$|\$[0-9]+$|<[^>]*>$|\{\{)/i.test(v);
}

const RULES: Rule[] = [
  {
    // ALTER ROLE/USER … [ENCRYPTED] PASSWORD '…', CREATE USER MAPPING … OPTIONS (password '…'), \password is client-side.
    name: 'sql_password',
    pattern: new RegExp(String.raw`(?<![A-Za-z0-9_])password\s{1,16}${SQL_LITERAL}`, 'gid'),
    groups: [1, 2, 4], validate: notPlaceholder,
  },
  {
    // MySQL: IDENTIFIED [WITH plugin] BY '…'
    name: 'sql_password',
    pattern: new RegExp(String.raw`(?<![A-Za-z0-9_])identified\s{1,16}(?:with\s{1,16}[A-Za-z0-9_'"]{1,64}\s{1,16})?by\s{1,16}${SQL_LITERAL}`, 'gid'),
    groups: [1, 2, 4], validate: notPlaceholder,
  },
  {
    // SET [SESSION|LOCAL] app.api_token = '…' / TO '…', ALTER ROLE … SET …, ALTER SYSTEM SET …, and name = '…' comparisons.
    name: 'sql_secret_setting',
    pattern: new RegExp(String.raw`${SECRET_WORD}${NAME_REST}"?\s{0,16}(?:=|\bto\b)\s{0,16}${SQL_LITERAL}`, 'gid'),
    groups: [1, 2, 4], validate: notPlaceholder,
  },
  {
    // set_config('app.secret', '…', …)
    name: 'sql_secret_setting',
    pattern: new RegExp(String.raw`set_config\s{0,8}\(\s{0,8}'${SECRET_NAME}'\s{0,8},\s{0,8}${SQL_LITERAL}`, 'gid'),
    groups: [1, 2, 4], validate: notPlaceholder,
  },
  {
    // Authorization: Bearer … / Basic … / token …, and other headers that carry a credential.
    name: 'http_auth_header',
    pattern: /(?<![A-Za-z0-9_-])(?:proxy-)?authorization["']?\s{0,8}[:=]\s{0,8}(?:(?:bearer|basic|token|bot|digest|negotiate|apikey|sso-key)\s{1,8})?([^\s'",;]{4,4096})/gid,
    groups: [1], validate: notPlaceholder,
  },
  {
    name: 'http_auth_header',
    pattern: /(?<![A-Za-z0-9_-])(?:x-api-key|api-key|x-auth-token|private-token|job-token|x-vault-token|x-access-token|x-gitlab-token|x-goog-api-key|cookie|set-cookie)["']?\s{0,8}:\s{0,8}([^\s'"]{4,4096})/gid,
    groups: [1], validate: notPlaceholder,
  },
  {
    // --password=…, --password …, --db-password …, --token …, --client-secret=…, --api-key …
    name: 'cli_secret_option',
    pattern: new RegExp(String.raw`(?<=(?<![A-Za-z0-9_-])--?[A-Za-z0-9_.-]{0,64})${SECRET_WORD}${NAME_REST}(?:=|\s{1,8}(?!-))${CLI_VALUE}`, 'gid'),
    groups: [1, 2, 3], validate: notPlaceholder,
  },
  {
    // PGPASSWORD=… cmd, export GITHUB_TOKEN=…, MYSQL_PWD=… (names in capitals, as variables are; not PWD=/OLDPWD=, the working directory)
    name: 'env_secret',
    pattern: new RegExp(String.raw`(?:(?<![a-z])(?:PASSWORD|PASSWD|PASSPHRASE|SECRET|TOKEN|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|CREDENTIALS?|AUTH_?KEY)[A-Z0-9_]{0,64}|(?<=[A-Z0-9])_PWD)=${CLI_VALUE}`, 'gd'),
    groups: [1, 2, 3], validate: notPlaceholder,
  },
  {
    // curl -u user:pass / --user user:pass, sshpass -p …, mysql -pSECRET
    name: 'cli_secret_option',
    pattern: /(?<![A-Za-z0-9_-])(?:-u|--user|--proxy-user)[ \t=]{1,4}['"]?[^\s:'"]{1,256}:([^\s'"]{1,1024})/gid,
    groups: [1], validate: notPlaceholder,
  },
  {
    name: 'cli_secret_option',
    pattern: /(?<![A-Za-z0-9_-])sshpass[ \t]{1,8}-p[ \t]{0,8}(?:'([^'\r\n]{1,1024})'|"([^"\r\n]{1,1024})"|([^\s'"]{1,1024}))/gid,
    groups: [1, 2, 3], validate: notPlaceholder,
  },
  {
    name: 'cli_secret_option',
    pattern: /(?<![A-Za-z0-9_-])(?:mysql|mysqldump|mysqladmin|mariadb)(?:[ \t]{1,8}[^\s]{1,64}){0,12}?[ \t]{1,8}-p([^\s'"-][^\s'"]{0,1023})/gid,
    groups: [1], validate: notPlaceholder,
  },
];

const PREFILTER = /passw|passphrase|pwd|secret|token|key|credential|auth|identified|cookie|sshpass|-u|--user|mysql|mariadb/i;

function ruleDetector(name: string, rules: Rule[]): Detector {
  return {
    name, description: `secrets named by the text before them (${name})`, prefilter: PREFILTER,
    find(text: string, out: Finding[]) {
      if (text.length > 4 * 1024 * 1024) text = text.slice(0, 4 * 1024 * 1024); // recorded fields are bounded far below this
      for (const r of rules) {
        r.pattern.lastIndex = 0;
        for (let m = r.pattern.exec(text); m !== null; m = r.pattern.exec(text)) {
          if (m[0].length === 0) { r.pattern.lastIndex++; continue; }
          const g = r.groups.find((i) => m.indices![i] !== undefined && m[i] !== '');
          if (g === undefined) continue;
          const [start, end] = m.indices![g]!;
          if (r.validate && !r.validate(m[g]!)) continue;
          out.push({ detector: r.name, start, end });
          // Go on right after the value, so a value that holds another key word is not matched twice.
          r.pattern.lastIndex = Math.max(r.pattern.lastIndex, end);
        }
      }
    },
  };
}

/** Each context rule as a detector, named as in records of what was masked. */
export const CONTEXT_DETECTORS: readonly Detector[] = (() => {
  const byName = new Map<string, Rule[]>();
  for (const r of RULES) byName.set(r.name, [...(byName.get(r.name) ?? []), r]);
  return [...byName].map(([name, rules]) => ruleDetector(name, rules));
})();

export const CONTEXT_DETECTOR_NAMES = CONTEXT_DETECTORS.map((d) => d.name);
