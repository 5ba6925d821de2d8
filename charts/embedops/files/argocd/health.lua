-- Argo CD health check of the embedops.dev kinds: EmbeddingDataset, FineTuneJob, EmbeddingIndex.
-- One script for all three (argocd-cm: resource.customizations.health.embedops.dev_<Kind>).
-- Lua 5.1, as Argo CD runs it (gopher-lua); reads the global `obj`, returns {status, message}.
--
-- The operator writes status.observedGeneration, status.phase and the conditions Ready,
-- Progressing and Degraded (operator/embedops/status.py, operator/embedops/reconcile.py):
--   Progressing=True   work is under way (a Job runs, or a dependency or model is awaited);
--                      reason Suspended while the step's Job is suspended (Kueue, a person);
--   Degraded=True      a terminal failure (phase Failed, Ready=False) or, for an index still
--                      serving (Ready=True), low recall or drift (QualityDegraded) or a failed
--                      probe or drift Job (ProbeFailed, DriftFailed);
--   Ready=True         done: the dataset is prepared, the model trained, the index serving.
-- Progressing=True is checked before Degraded=True and Ready=True: work under way shows as
-- Progressing even while an earlier result still serves. Docs: docs/argocd.md.

local hs = {}

-- Ready=False reasons the operator never retries by itself: it waits for a spec change or the
-- embedops.dev/rerun annotation. Used only when the Degraded condition is missing.
local terminal = {
  InvalidSpec = true, MissingDatabase = true, NoProbeSet = true, JobFailed = true,
  BadWorkerResult = true, NoImprovement = true, NoLiveVersion = true, TargetConflict = true,
  EmptySource = true, GenerationFailed = true,
}

-- Notes the operator leaves on Progressing=False next to Ready=True (the publish step's outcome).
local notes = { GateFailed = true, RolledBack = true, Pinned = true }

local function condition(status, name)
  if type(status) ~= "table" or type(status.conditions) ~= "table" then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if type(c) == "table" and c.type == name then
      return c
    end
  end
  return nil
end

local function is(c, value)
  return c ~= nil and c.status == value
end

local function text(c, fallback)
  if c ~= nil then
    if type(c.message) == "string" and c.message ~= "" then
      return c.message
    end
    if type(c.reason) == "string" and c.reason ~= "" then
      return c.reason
    end
  end
  return fallback
end

local function result(status, message)
  hs.status = status
  hs.message = message
  return hs
end

local function check()
  if type(obj) ~= "table" then
    return result("Unknown", "No object to assess")
  end
  local st = obj.status
  if type(st) ~= "table" or next(st) == nil then
    return result("Progressing", "Waiting for the operator to reconcile the resource")
  end

  local generation = nil
  if type(obj.metadata) == "table" then
    generation = tonumber(obj.metadata.generation)
  end
  local observed = tonumber(st.observedGeneration)
  if generation ~= nil and (observed == nil or observed < generation) then
    return result("Progressing", "Waiting for the operator to observe generation " .. generation
      .. " (status is of " .. (observed and tostring(observed) or "no generation") .. ")")
  end

  local ready = condition(st, "Ready")
  local progressing = condition(st, "Progressing")
  local degraded = condition(st, "Degraded")

  if is(progressing, "True") then
    if progressing.reason == "Suspended" then
      return result("Suspended", text(progressing, "The step's Job is suspended"))
    end
    return result("Progressing", text(progressing, "The operator is working on the resource"))
  end

  if is(degraded, "True") then
    return result("Degraded", text(degraded, text(ready, "Degraded")))
  end

  if is(ready, "True") then
    local message = text(ready, "Ready")
    if progressing ~= nil and notes[progressing.reason] and type(progressing.message) == "string"
        and progressing.message ~= "" then
      message = message .. "; " .. progressing.message
    end
    return result("Healthy", message)
  end

  if st.phase == "Failed" or (is(ready, "False") and terminal[ready.reason]) then
    return result("Degraded", text(ready, "Failed"))
  end
  if ready ~= nil and ready.reason == "Suspended" then
    return result("Suspended", text(ready, "The step's Job is suspended"))
  end
  if ready ~= nil then
    return result("Progressing", text(ready, "Waiting for the resource to become Ready"))
  end
  return result("Progressing", "Waiting for the Ready condition")
end

return check()
