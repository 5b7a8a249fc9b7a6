# Sourced by the experiment scripts: the demo-scale task they share (the demo's tiny target, forget05
# task 1, lr 1e-3, 10 epochs, batch 4) and `run NAME ARGS...`, which runs `unlearn run` into $R/NAME
# unless that run is finished (so the scripts are resumable).
U=${UNLEARN:-.venv/bin/unlearn}
[ -f demo_out/target/model/config.json ] || $U demo --out demo_out --overwrite
common=(--model demo_out/target/model --data demo_out/data --retain-model demo_out/retain_model --split forget05
        --task-id 1 --epochs 10 --lr 1e-3 --batch-size 4 --grad-accum 1 --max-length 128 --nli none)
run() {  # name, args...
  local name=$1; shift
  [ -f "$R/$name/summary.json" ] || $U run "${common[@]}" "$@" --out "$R/$name" --overwrite
}
