// Which exec commands read their program from stdin (and so have it recorded line by line,
// before forwarding): shells and interpreters without a script or inline program, through
// wrappers, pipelines and redirections.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { stdinInterpreter } from '../../src/engines/ssh/exec-stdin.ts';

test('interpreters reading their program from stdin are recognised; commands reading data are not', () => {
  const cases: Array<[string, string | null]> = [
    ['bash', 'bash'], ['sh', 'sh'], ['/bin/bash -s -- a b', 'bash'], ['bash -e', 'bash'], ['bash script.sh', null], ['bash -c "cat"', null],
    ['bash -ex', 'bash'], ['sh -c \'cat > /tmp/x\'', null], ['python3', 'python3'], ['python3 -', 'python3'], ['python3 train.py', null],
    ['python3 -u', 'python3'], ['python3 -c "print(1)"', null], ['perl', 'perl'], ['perl -e 1', null], ['psql -d db', 'psql'], ['psql -c "select 1"', null],
    ['psql -f -', 'psql'], ['psql -f x.sql', null], ['cat > /tmp/x', null], ['cat', null], ['tar xzf - -C /x', null], ['sudo bash', 'bash'], ['sudo -u bob bash', 'bash'],
    ['sudo -s', 'sudo'], ['sudo -i', 'sudo'], ['sudo ls', null], ['env A=1 bash', 'bash'], ['A=1 B=2 sh', 'sh'], ['cd /tmp && bash', 'bash'], ['cat | bash', 'bash'],
    ['bash 2>&1', 'bash'], ['bash 2>/dev/null', 'bash'], ['timeout 10 bash', 'bash'], ['node', 'node'], ['node app.js', null], ['ruby', 'ruby'], ['zsh', 'zsh'],
    ['dash', 'dash'], ['mysql -u root db', 'mysql'], ['mysql -e "show tables"', null], ['scp -t /tmp', null], ['git-upload-pack x', null], ['exec bash -l', 'bash'],
    ['bash -o pipefail', 'bash'], ['nice -n 5 python3', 'python3'], ['echo $(bash)', 'bash'], ['rsync --server .', null], ['su - postgres', 'su'], ['su -c id', null],
  ];
  for (const [command, expected] of cases) assert.equal(stdinInterpreter(command), expected, command);
});
