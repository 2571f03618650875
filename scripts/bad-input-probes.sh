#!/bin/bash
# The bad-input probes of docs/bad-input.md, run in a fresh temporary folder: each command, its output and exit
# code. Usage: PYTHON=.venv/bin/python scripts/bad-input-probes.sh
REPO=$(cd "$(dirname "$0")/.." && pwd)
idgenrec() { PYTHONPATH="$REPO" "${PYTHON:-python}" -m idgenrec.cli "$@"; }
probe() { echo "\$ $*"; "$@" 2>&1 | sed -e 's/\r/\n/g' | grep -v '^$' ; echo "[exit ${PIPESTATUS[0]}]"; echo; }
cd "$(mktemp -d)"
idgenrec data synth --users 30 --items 20 --out raw > /dev/null
mkdir -p parent/otherdataset && echo notes > parent/notes.txt && cp raw/user_sequence.txt parent/otherdataset/
echo "### 1 existing folder"
probe idgenrec data prepare idgenrec raw --out parent
probe idgenrec data prepare idgenrec raw --out parent --overwrite
probe ls -A parent
probe idgenrec data prepare idgenrec raw --out parent
probe idgenrec data synth --users 30 --items 20 --out parent
echo "### 2 --out ."
mkdir here && cd here
probe idgenrec data prepare idgenrec ../raw --out .
cd .. && mkdir notmine && echo notes > notmine/notes.txt && cd notmine
probe idgenrec data prepare idgenrec ../raw --out .
probe idgenrec data prepare idgenrec ../raw --out . --overwrite
probe ls -A
cd ..
echo "### 3 non-UTF-8"
cp -r raw latin && printf 'u9 caf\xe9 x\n' >> latin/user_sequence.txt
probe idgenrec data prepare idgenrec latin --out latin-out
probe idgenrec data prepare idgenrec latin --out latin-out --skip-bad-lines
probe idgenrec data stats latin
probe idgenrec tokenizer train latin --vocab-size 300 --out tok
echo "### run folders"
probe idgenrec finetune --data raw --out parent
mkdir -p run/checkpoints && echo '{"command": "finetune", "files": ["checkpoints"]}' > run/.idgenrec-output.json && touch run/checkpoints/x
probe idgenrec finetune --data raw --out run
probe idgenrec pretrain --corpus raw --out parent
probe idgenrec demo --quick --out parent
probe idgenrec pretrain build-corpus --dataset a=raw --out parent
probe idgenrec tokenizer train raw --out parent
probe idgenrec idgen warmstart --data raw --tokenizer tok --out parent
probe idgenrec idgen generate --model gen --tokenizer tok --data raw --out parent/notes.txt
probe idgenrec finetune --data raw --out raw/stats.json
echo "### readers"
printf '{"reviewerID": "U0", "asin": "A0", "unixReviewTime": 1}\n{"reviewerID": "U0", "asin": \n' > bad.json
printf "{'asin': 'A0', 'title': 'x'}\n" > meta.json
probe idgenrec data prepare amazon2018 --reviews bad.json --meta meta.json --out o
printf '{"reviewerID": "U0", "asin": "A0"}\n' > nofield.json
probe idgenrec data prepare amazon2018 --reviews nofield.json --meta meta.json --out o
: > empty.json
probe idgenrec data prepare amazon2018 --reviews empty.json --meta meta.json --out o
printf '{"reviewerID": "U0", "asin": "A0", "asin": "A1", "unixReviewTime": 1}\n' > dup.json
probe idgenrec data prepare amazon2018 --reviews dup.json --meta meta.json --out o
printf '{"reviewerID": "U0", "asin": "A0", "unixReviewTime": "yesterday"}\n' > time.json
probe idgenrec data prepare amazon2018 --reviews time.json --meta meta.json --out o
printf '{"reviewerID": "U 0", "asin": "A0", "unixReviewTime": 1}\n' > space.json
probe idgenrec data prepare amazon2018 --reviews space.json --meta meta.json --out o
printf '{"user_id": "U0", "business_id": "B0", "date": "05/01/2012"}\n' > review.json
printf '{"business_id": "B0", "name": "Cafe"}\n' > business.json
probe idgenrec data prepare yelp --business business.json --review review.json --out o
"${PYTHON:-python}" -c "open('u16.json','wb').write('{\"reviewerID\": \"U0\", \"asin\": \"A0\", \"unixReviewTime\": 1}\n'.encode('utf-16'))"
probe idgenrec data prepare amazon2014 --reviews u16.json --meta meta.json --out o
probe idgenrec data prepare amazon2014 --reviews u16.json --meta meta.json --out o --skip-bad-lines
"${PYTHON:-python}" -c "
import gzip; d = gzip.compress(b''.join(b'{\"reviewerID\": \"U%d\", \"asin\": \"A0\", \"unixReviewTime\": 1}\n' % i for i in range(2000)))
open('cut.json.gz', 'wb').write(d[:len(d) // 2])"
probe idgenrec data prepare amazon2014 --reviews cut.json.gz --meta meta.json --out o
cp -r raw cols && printf 'u99\n' >> cols/user_sequence.txt
probe idgenrec data prepare idgenrec cols --out o
cp -r raw twice && head -1 raw/user_sequence.txt >> twice/user_sequence.txt
probe idgenrec data prepare idgenrec twice --out o
cp -r raw notext && printf 'i999\n' >> notext/item_plain_text.txt
probe idgenrec data prepare idgenrec notext --out o
probe idgenrec data prepare idgenrec notext --out o --skip-bad-lines
