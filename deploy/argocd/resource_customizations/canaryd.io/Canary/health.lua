-- Argo CD health check for canaryd.io/Canary.
--
-- Argo CD runs this with the live object in `obj` and shows the status it
-- returns on the Canary and, through it, on the Application:
--   Healthy      at rest: initialized, or the last revision promoted
--   Progressing  a run or an initialization under way, or waiting for canaryd
--   Suspended    paused by `kubectl canary pause`, or spec.suspend is true
--   Degraded     the last revision was rolled back, or the Canary cannot work
--                as written (Ready=False with a configuration reason)
-- Argo CD's Lua is 5.1 (gopher-lua); this script uses nothing newer, and
-- tests/packaging/test_argocd_health.py runs it with Debian's lua5.4.

local function condition(status, kind)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function number(value)
  if value == nil then
    return 0
  end
  return math.floor(tonumber(value) + 0.5)
end

local function steps(spec)
  local analysis = (spec or {}).analysis or {}
  if analysis.stepWeights ~= nil then
    return #analysis.stepWeights
  end
  local step = number(analysis.stepWeight)
  if step <= 0 then
    step = 10
  end
  local top = number(analysis.maxWeight)
  if top <= 0 then
    top = 50
  end
  return math.ceil(top / step)
end

local function said(c)
  if c == nil or c.message == nil or c.message == "" then
    return ""
  end
  return ": " .. c.message
end

-- Ready=False for these reasons is a step on the way, not a problem.
local passing = { Initializing = true, PrimaryNotReady = true, Deleting = true, Suspended = true }

hs = {}
local status = obj.status
local phase = status ~= nil and status.phase or nil

if obj.metadata.deletionTimestamp ~= nil or phase == "Terminating" then
  hs.status = "Progressing"
  hs.message = "Being deleted: canaryd returns all traffic to the primary before it lets go"
  return hs
end

if obj.spec ~= nil and obj.spec.suspend == true then
  hs.status = "Suspended"
  hs.message = "spec.suspend is true: canaryd leaves the target and its routes alone"
  return hs
end

if status == nil or phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for canaryd to initialize the Canary"
  return hs
end

local generation = number(obj.metadata.generation)
if generation > 0 and number(status.observedGeneration) < generation then
  hs.status = "Progressing"
  hs.message = string.format("Waiting for canaryd to observe generation %d", generation)
  return hs
end

local ready = condition(status, "Ready")
if ready ~= nil and ready.status == "False" and not passing[ready.reason] then
  hs.status = "Degraded"
  hs.message = (ready.reason or "NotReady") .. said(ready)
  return hs
end

local weight = number(status.canaryWeight)
local progress = condition(status, "Progressing")

if phase == "Initialized" or phase == "Succeeded" then
  local routes = condition(status, "RoutesReady")
  if routes ~= nil and routes.status == "False" then
    -- Nothing runs now, but the next revision could not move traffic.
    hs.status = "Degraded"
    hs.message = (routes.reason or "RoutesNotReady") .. said(routes)
    return hs
  end
  hs.status = "Healthy"
  if phase == "Succeeded" then
    hs.message = "Promoted revision " .. tostring(status.revision or status.lastPromotedRevision or "")
  else
    hs.message = "Initialized: the primary serves revision " .. tostring(status.lastPromotedRevision or "")
  end
  return hs
end

if phase == "Failed" then
  hs.status = "Degraded"
  hs.message = "Rolled back revision " .. tostring(status.revision or "") .. said(progress)
  return hs
end

if status.paused == true then
  hs.status = "Suspended"
  hs.message = string.format("Paused at step %d/%d, %d%% on the canary: kubectl canary resume %s -n %s",
    number(status.step), steps(obj.spec), weight, obj.metadata.name, obj.metadata.namespace or "default")
  return hs
end

hs.status = "Progressing"
if phase == "Progressing" then
  hs.message = string.format("Step %d/%d, %d%% on the canary", number(status.step), steps(obj.spec), weight)
  local routes = condition(status, "RoutesReady")
  if routes ~= nil and routes.status == "False" then
    hs.message = hs.message .. "; " .. (routes.reason or "RoutesNotReady") .. said(routes)
  end
  local analysis = condition(status, "AnalysisHealthy")
  if analysis ~= nil and analysis.status == "False" then
    hs.message = hs.message .. "; " .. (analysis.reason or "AnalysisUnhealthy") .. said(analysis)
  end
elseif phase == "Initializing" then
  hs.message = "Initializing" .. said(ready)
elseif phase == "Waiting" then
  hs.message = "Waiting for a free run slot" .. said(progress)
elseif phase == "Promoting" then
  hs.message = "Promoting revision " .. tostring(status.revision or "") .. said(progress)
elseif phase == "Finalizing" or phase == "Finalising" then
  hs.message = "Finalizing: all traffic back on the primary, scaling the canary down"
else
  hs.message = "Phase " .. tostring(phase)
end
return hs
