# A throwaway single-node Slurm (Debian's slurm-wlm and munge) for the tests
# that launch `sweep worker`s as a job array: all state in a temp dir, the
# daemons on 127.0.0.1 only. Sourced by .ci/run: `slurm_up` starts it and
# exports SLURM_CONF and SWEEP_TEST_SLURM; `slurm_down` stops it (and cancels
# any job left) and removes the temp dir. Needs root (slurmd runs as root).

slurm_up() {
  if ! command -v slurmctld >/dev/null 2>&1; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge; } \
      >/dev/null 2>&1 || { echo "warning: could not install slurm-wlm and munge"; return 1; }
  fi
  SLURM_TMP=$(mktemp -d /tmp/sweep-slurm.XXXXXX)
  chmod 755 "$SLURM_TMP"
  mkdir -p "$SLURM_TMP"/{munge,state,spool,log}
  export SLURM_CONF="$SLURM_TMP/slurm.conf"
  # munge with its own key and socket (the socket's folder must be world-executable).
  chown munge:munge "$SLURM_TMP/munge"
  chmod 755 "$SLURM_TMP/munge"
  dd if=/dev/urandom of="$SLURM_TMP/munge/munge.key" bs=1024 count=1 status=none
  chown munge:munge "$SLURM_TMP/munge/munge.key"
  chmod 400 "$SLURM_TMP/munge/munge.key"
  runuser -u munge -- /usr/sbin/munged --key-file="$SLURM_TMP/munge/munge.key" \
    --socket="$SLURM_TMP/munge/munge.socket" --pid-file="$SLURM_TMP/munge/munged.pid" \
    --log-file="$SLURM_TMP/munge/munged.log" --seed-file="$SLURM_TMP/munge/munged.seed" || return 1
  cat >"$SLURM_CONF" <<CONF
ClusterName=sweepci
SlurmctldHost=localhost
SlurmctldPort=${SLURM_CTLD_PORT:-16817}
SlurmdPort=${SLURM_D_PORT:-16818}
CommunicationParameters=NoInAddrAny,NoCtldInAddrAny
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SLURM_TMP/munge/munge.socket
StateSaveLocation=$SLURM_TMP/state
SlurmdSpoolDir=$SLURM_TMP/spool
SlurmctldPidFile=$SLURM_TMP/slurmctld.pid
SlurmdPidFile=$SLURM_TMP/slurmd.pid
SlurmctldLogFile=$SLURM_TMP/log/slurmctld.log
SlurmdLogFile=$SLURM_TMP/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerParameters=batch_sched_delay=0
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
KillWait=30
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$(nproc) State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
  /usr/sbin/slurmctld -f "$SLURM_CONF" || return 1
  /usr/sbin/slurmd -N localhost -f "$SLURM_CONF" || return 1
  local _
  for _ in $(seq 1 120); do
    [ "$(sinfo -h -N -o %T 2>/dev/null)" = idle ] && break
    sleep 0.5
  done
  if [ "$(sinfo -h -N -o %T 2>/dev/null)" != idle ]; then
    echo "warning: slurm did not come up:"
    tail -n 20 "$SLURM_TMP"/log/*.log
    return 1
  fi
  export SWEEP_TEST_SLURM=1
  echo "slurm up: $(sinfo -h -o '%P %D nodes %C cpus (A/I/O/T)')"
}

slurm_down() {
  [ -n "${SLURM_TMP:-}" ] && [ -d "$SLURM_TMP" ] || return 0
  scancel --full --state=RUNNING,PENDING 2>/dev/null || true
  local pids=() f p
  for f in "$SLURM_TMP/slurmd.pid" "$SLURM_TMP/slurmctld.pid" "$SLURM_TMP/munge/munged.pid"; do
    [ -s "$f" ] && pids+=("$(cat "$f")")
  done
  if [ ${#pids[@]} -gt 0 ]; then
    kill "${pids[@]}" 2>/dev/null || true
    for _ in $(seq 1 75); do
      local alive=0
      for p in "${pids[@]}"; do
        [ -e "/proc/$p" ] && [ "$(awk '{print $3}' "/proc/$p/stat" 2>/dev/null)" != Z ] && alive=1
      done
      [ "$alive" = 0 ] && break
      sleep 0.2
    done
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  fi
  rm -rf "$SLURM_TMP"
  unset SLURM_TMP
}
