// 规则: a rule set in the JDM editor; save a draft, dry-run it on an order, back-test it, publish / roll back,
// compare versions, switch single rules off.
import '../monaco';
import '@gorules/jdm-editor/dist/style.css';
import { useEffect, useMemo, useRef, useState } from 'react';
import { DecisionGraph, JdmConfigProvider, type DecisionGraphType } from '@gorules/jdm-editor';
import Editor from '@monaco-editor/react';
import { Alert, App, Button, Card, Col, Descriptions, Empty, Input, InputNumber, Modal, Progress, Row, Select, Space, Switch, Table, Tabs, Tag, Typography } from 'antd';
import { api, ApiError, followJob, type Job } from '../api';
import { useApi } from '../hooks';
import { useI18n } from '../i18n';
import { useAuth } from '../auth';
import { time } from '../format';
import { ErrorState, NoPermission, errorText } from '../components/ErrorState';

interface RuleSetSummary {
  name: string; published_version: number | null; draft_version: number | null; disabled: string[];
  versions: { version: number; state: string; author: string; note: string | null; created_at: string; published_at: string | null }[];
}

function ChangeList({ changes }: { changes: Record<string, any> }) {
  const { t, label } = useI18n();
  const keys = Object.keys(changes);
  if (keys.length === 0) return <Typography.Text type="success">{t('rules.noChange')}</Typography.Text>;
  return (
    <Descriptions size="small" column={1} bordered>
      {keys.map((k) => (
        <Descriptions.Item key={k} label={t(`rules.change.${k}` as any)}>
          {'from' in changes[k] ? `${changes[k].from ?? '—'} → ${changes[k].to ?? '—'}` : (
            <>
              {changes[k].added?.map((c: string) => <Tag key={`+${c}`} color="red">+ {label('hold', c)}</Tag>)}
              {changes[k].removed?.map((c: string) => <Tag key={`-${c}`} color="green">− {label('hold', c)}</Tag>)}
            </>
          )}
        </Descriptions.Item>
      ))}
    </Descriptions>
  );
}

function ruleIds(content: DecisionGraphType | undefined): { id: string; description: string }[] {
  const rows: { id: string; description: string }[] = [];
  for (const node of content?.nodes ?? []) {
    if (node.type !== 'decisionTableNode') continue;
    for (const rule of (node.content as any)?.rules ?? []) if (rule._id) rows.push({ id: rule._id, description: rule._description ?? '' });
  }
  return rows;
}

function BacktestPanel({ name, content }: { name: string; content: DecisionGraphType | undefined }) {
  const { t, label } = useI18n();
  const [days, setDays] = useState(7);
  const [job, setJob] = useState<Job | null>(null);
  const [seconds, setSeconds] = useState(0);
  const [report, setReport] = useState<any>(null);
  const [problem, setProblem] = useState<string | null>(null);
  const [starting, setStarting] = useState(false);
  const following = useRef<AbortController | null>(null);
  const running = job?.state === 'running';

  useEffect(() => () => following.current?.abort(), []); // leaving the page stops the polling (the job runs on)
  useEffect(() => {
    if (!running) return undefined;
    const id = window.setInterval(() => setSeconds((s) => s + 1), 1000);
    return () => window.clearInterval(id);
  }, [running]);

  const run = async () => {
    following.current?.abort();
    const controller = new AbortController();
    following.current = controller;
    setJob(null);
    setSeconds(0);
    setReport(null);
    setProblem(null);
    setStarting(true);
    try {
      // a job on the server: the bar is its real progress (orders re-decided), polled every 500 ms
      const started = await api<Job>(`/rules/${name}/backtest-jobs`, { body: { days, content }, signal: controller.signal });
      setStarting(false);
      const done = await followJob(started, setJob, controller.signal);
      setReport(done.result);
    } catch (err) {
      if ((err as Error)?.name === 'AbortError') return;
      setProblem(err instanceof ApiError ? errorText(t, label, err) : String(err));
    } finally {
      if (following.current === controller) setStarting(false);
    }
  };

  return (
    <Space direction="vertical" style={{ width: '100%' }}>
      <Space>
        {t('rules.lastDays')}<InputNumber min={0.1} max={90} value={days} onChange={(v) => setDays(Number(v) || 7)} />
        <Button type="primary" onClick={run} loading={starting || running} data-testid="backtest-run">{t('rules.backtest')}</Button>
      </Space>
      {job && (running || job.state === 'done') && (
        <div data-testid="backtest-progress" data-percent={job.percent}>
          <Progress percent={job.percent} status={running ? 'active' : 'success'} format={(p) => `${p}%`} />
          <Typography.Text type="secondary">
            {job.total !== null ? t('rules.backtestRunning', { done: job.done, total: job.total, s: seconds }) : running ? t('rules.backtestStarting') : null}
          </Typography.Text>
        </div>
      )}
      {problem && <Alert type="error" showIcon message={problem} data-testid="backtest-problem" />}
      {report && (
        <Card size="small" data-testid="backtest-report">
          <Descriptions size="small" column={3}>
            <Descriptions.Item label={t('rules.btOrders')}>{report.orders}</Descriptions.Item>
            <Descriptions.Item label={t('rules.btChanged')}>{report.changed}</Descriptions.Item>
            <Descriptions.Item label={t('rules.btLive')}>{report.live_rule_version}</Descriptions.Item>
          </Descriptions>
          {report.truncated && <Alert type="warning" message={t('rules.btTruncated')} />}
          <Table size="small" pagination={false} rowKey="kind" style={{ marginTop: 8 }}
            dataSource={Object.entries(report.by_change).map(([kind, n]) => ({ kind, n }))}
            locale={{ emptyText: t('rules.noChange') }}
            columns={[{ title: t('rules.btKind'), dataIndex: 'kind' }, { title: t('rules.btCount'), dataIndex: 'n', align: 'right' }]} />
          {report.samples.length > 0 && (
            <Table size="small" pagination={{ pageSize: 10 }} rowKey="order_id" style={{ marginTop: 8 }} dataSource={report.samples}
              columns={[{ title: t('field.order'), dataIndex: 'order_id', render: (v) => <a href={`/orders/${v}`} target="_blank" rel="noreferrer">{v.slice(0, 12)}…</a> },
                { title: t('field.channel'), dataIndex: 'channel', render: (v) => label('channel', v) },
                { title: t('rules.btChanges'), dataIndex: 'changes', render: (v) => <ChangeList changes={v} /> }]} />
          )}
        </Card>
      )}
    </Space>
  );
}

function DryRunPanel({ name, content }: { name: string; content: DecisionGraphType | undefined }) {
  const { t, label } = useI18n();
  const [orderId, setOrderId] = useState('');
  const [busy, setBusy] = useState(false);
  const [result, setResult] = useState<any>(null);
  const [problem, setProblem] = useState<string | null>(null);
  const run = async () => {
    setBusy(true);
    setProblem(null);
    try {
      // an order number from the search box works too: resolve it to the internal id first
      let id = orderId.trim();
      if (!/^[0-9a-f]{32}$/.test(id)) {
        const found = await api<{ items: { id: string }[] }>('/orders', { query: { q: id, limit: 1 } });
        if (!found.items.length) throw new ApiError(404, 'not_found', t('rules.orderNotFound'), 'order_id');
        id = found.items[0].id;
      }
      setResult(await api(`/rules/${name}/dry-run`, { body: { order_id: id, content } }));
    } catch (err) {
      setResult(null);
      setProblem(err instanceof ApiError ? errorText(t, label, err) : String(err));
    } finally {
      setBusy(false);
    }
  };
  return (
    <Space direction="vertical" style={{ width: '100%' }}>
      <Space.Compact style={{ width: 520 }}>
        <Input placeholder={t('rules.dryRunOrder')} value={orderId} onChange={(e) => setOrderId(e.target.value)} onPressEnter={run} data-testid="dryrun-order" />
        <Button type="primary" onClick={run} loading={busy} disabled={!orderId.trim()} data-testid="dryrun-run">{t('rules.dryRun')}</Button>
      </Space.Compact>
      {problem && <Alert type="error" showIcon message={problem} data-testid="dryrun-problem" />}
      {result && (
        <Card size="small" data-testid="dryrun-result">
          <Typography.Text strong>{t('rules.changes')}</Typography.Text>
          <div style={{ margin: '8px 0' }}><ChangeList changes={result.changes} /></div>
          <Row gutter={16}>
            {(['live', 'draft'] as const).map((side) => (
              <Col span={12} key={side}>
                <Typography.Text type="secondary">{side === 'live' ? t('rules.liveDecision', { v: result.live?.rule_version }) : t('rules.draftDecision', { v: result.draft?.version ?? '' })}</Typography.Text>
                <Descriptions size="small" column={1}>
                  <Descriptions.Item label={t('field.warehouse')}>{result[side]?.decision?.warehouse ?? '—'}</Descriptions.Item>
                  <Descriptions.Item label={t('field.priority')}>{result[side]?.decision?.priority}</Descriptions.Item>
                  <Descriptions.Item label={t('field.carrier')}>{result[side]?.decision?.carrier ?? '—'}</Descriptions.Item>
                  <Descriptions.Item label={t('field.holds')}>{(result[side]?.decision?.holds ?? []).map((h: any) => <Tag key={h.code} color="orange">{label('hold', h.code)}</Tag>)}</Descriptions.Item>
                  <Descriptions.Item label={t('order.fired')}>{(result[side]?.decision?.fired ?? []).map((r: string) => <Tag key={r}>{r}</Tag>)}</Descriptions.Item>
                </Descriptions>
              </Col>
            ))}
          </Row>
          <details>
            <summary>{t('rules.trace')}</summary>
            <pre style={{ maxHeight: 240, overflow: 'auto', fontSize: 12 }}>{JSON.stringify(result.trace, null, 2)}</pre>
          </details>
        </Card>
      )}
    </Space>
  );
}

function DiffPanel({ name, set }: { name: string; set: RuleSetSummary }) {
  const { t, label } = useI18n();
  const versions = set.versions.map((v) => v.version).sort((a, b) => a - b);
  const [a, setA] = useState<number | undefined>(versions.length > 1 ? versions[versions.length - 2] : versions[0]);
  const [b, setB] = useState<number | undefined>(versions[versions.length - 1]);
  const [diff, setDiff] = useState<any>(null);
  const [problem, setProblem] = useState<string | null>(null);
  const run = async () => {
    try {
      setDiff(await api(`/rules/${name}/diff`, { query: { a, b } }));
      setProblem(null);
    } catch (err) {
      setProblem(err instanceof ApiError ? errorText(t, label, err) : String(err));
    }
  };
  const row = (r: Record<string, any>) => Object.entries(r).filter(([k]) => k !== '_id').map(([k, v]) => <div key={k}><Typography.Text type="secondary">{k}</Typography.Text> {String(v)}</div>);
  return (
    <Space direction="vertical" style={{ width: '100%' }}>
      <Space>
        <Select style={{ width: 100 }} value={a} onChange={setA} options={versions.map((v) => ({ value: v, label: `v${v}` }))} />→
        <Select style={{ width: 100 }} value={b} onChange={setB} options={versions.map((v) => ({ value: v, label: `v${v}` }))} />
        <Button onClick={run} disabled={a === undefined || b === undefined}>{t('rules.compare')}</Button>
      </Space>
      {problem && <Alert type="error" showIcon message={problem} />}
      {diff && (diff.added.length + diff.removed.length + diff.changed.length === 0 ? <Typography.Text type="secondary">{t('rules.sameVersions')}</Typography.Text> : (
        <Table size="small" pagination={false} rowKey={(r: any) => `${r.kind}:${r.id}`} data-testid="diff-table"
          dataSource={[...diff.added.map((r: any) => ({ kind: 'added', id: r._id, to: r })), ...diff.removed.map((r: any) => ({ kind: 'removed', id: r._id, from: r })),
            ...diff.changed.map((r: any) => ({ kind: 'changed', id: r._id, from: r.from, to: r.to }))]}
          columns={[
            { title: t('rules.diffKind'), dataIndex: 'kind', render: (k) => <Tag color={k === 'added' ? 'green' : k === 'removed' ? 'red' : 'gold'}>{t(`rules.diff.${k}` as any)}</Tag> },
            { title: t('rules.ruleId'), dataIndex: 'id' },
            { title: `v${a}`, dataIndex: 'from', render: (r) => (r ? row(r) : '—') },
            { title: `v${b}`, dataIndex: 'to', render: (r) => (r ? row(r) : '—') },
          ]} />
      ))}
    </Space>
  );
}

export default function Rules() {
  const { t, label, lang } = useI18n();
  const { can, me } = useAuth();
  const { message, modal } = App.useApp();
  const sets = useApi((signal) => api<{ rule_version: string; sets: RuleSetSummary[] }>('/rules', { signal }), []);
  const [name, setName] = useState<string | null>(null);
  const current = sets.data?.sets.find((s) => s.name === name) ?? sets.data?.sets[0];
  const setName_ = current?.name;
  const version = useApi((signal) => (setName_ ? api<any>(`/rules/${setName_}`, { signal }) : Promise.resolve(null)),
    [setName_, current?.draft_version, current?.published_version]);
  const [content, setContent] = useState<DecisionGraphType | undefined>();
  const [dirty, setDirty] = useState(false);
  const [note, setNote] = useState('');
  const [busy, setBusy] = useState<string | null>(null);
  const [editorKey, setEditorKey] = useState(0);
  // The editor reports its own normalisation of a loaded graph as a change; only what follows a
  // person's click or key press in it counts as an edit (compared with the normalised graph).
  const baseline = useRef<string | null>(null);
  const touched = useRef(false);

  const reload = (graph: DecisionGraphType | undefined) => {
    baseline.current = graph ? JSON.stringify(graph) : null;
    touched.current = false;
    setContent(graph);
    setDirty(false);
    setEditorKey((k) => k + 1);
  };
  useEffect(() => {
    if (version.data) reload(version.data.content);
  }, [version.data]); // eslint-disable-line react-hooks/exhaustive-deps

  const onEdit = (value: DecisionGraphType) => {
    const text = JSON.stringify(value);
    if (!touched.current) baseline.current = text;
    setContent(value);
    setDirty(touched.current && text !== baseline.current);
  };

  const rules = useMemo(() => ruleIds(content), [content]);
  const describe = (e: ApiError) => errorText(t, label, e);

  const act = async (what: string, fn: () => Promise<unknown>, done: string) => {
    setBusy(what);
    try {
      await fn();
      message.success(done);
      sets.reload();
    } catch (err) {
      if (err instanceof ApiError) modal.error({ title: t('rules.failed'), content: describe(err) });
      else message.error(String(err));
    } finally {
      setBusy(null);
    }
  };

  if (sets.error) return <ErrorState error={sets.error} onRetry={sets.reload} />;
  if (!sets.data || !current) return <Card loading />;
  const hasDraft = current.draft_version !== null;

  return (
    <Space direction="vertical" size="middle" style={{ width: '100%' }}>
      <div style={{ display: 'flex', justifyContent: 'space-between', alignItems: 'center' }}>
        <Space>
          <Typography.Title level={4} style={{ margin: 0 }}>{t('nav.rules')}</Typography.Title>
          <Tag color="blue" data-testid="live-rule-version">{t('rules.live', { v: sets.data.rule_version })}</Tag>
        </Space>
      </div>
      <Tabs activeKey={current.name} onChange={(k) => { if (!dirty || window.confirm(t('rules.discard'))) setName(k); }}
        items={sets.data.sets.map((s) => ({ key: s.name, label: <span data-testid={`ruleset-${s.name}`}>{label('ruleset', s.name)}{s.draft_version !== null && <Tag color="gold" style={{ marginInlineStart: 6 }}>{t('rules.draft')}</Tag>}</span> }))} />
      <Card size="small">
        <Space wrap style={{ marginBottom: 12 }}>
          <Typography.Text>{t('rules.published', { v: current.published_version ?? '—' })}</Typography.Text>
          <Typography.Text>{hasDraft ? t('rules.draftVersion', { v: current.draft_version }) : t('rules.noDraft')}</Typography.Text>
          <Typography.Text type="secondary">{t('rules.editing', { v: version.data?.version ?? '—', state: label('ruleState', version.data?.state) })}</Typography.Text>
          {dirty && <Tag color="orange" data-testid="rules-dirty">{t('rules.unsaved')}</Tag>}
        </Space>
        <Space wrap style={{ marginBottom: 12 }}>
          <Input placeholder={t('rules.note')} value={note} onChange={(e) => setNote(e.target.value)} style={{ width: 240 }} data-testid="rules-note" />
          {can('rules:write') && (
            <Button type="primary" disabled={!dirty} loading={busy === 'save'} data-testid="rules-save"
              onClick={() => act('save', () => api(`/rules/${current.name}`, { method: 'PUT', body: { content, note: note || null, author: me?.username } }), t('rules.saved'))}>
              {t('rules.saveDraft')}
            </Button>
          )}
          {can('rules:publish') && (
            <Button disabled={!hasDraft || dirty} loading={busy === 'publish'} data-testid="rules-publish"
              onClick={() => modal.confirm({
                title: t('rules.publishConfirm', { v: current.draft_version }), content: t('rules.publishHint'), okText: t('rules.publish'), cancelText: t('action.cancel'),
                onOk: () => act('publish', () => api(`/rules/${current.name}/publish`, { body: { note: note || null, author: me?.username } }), t('rules.publishedOk')),
              })}>
              {t('rules.publish')}
            </Button>
          )}
          {can('rules:publish') && (
            <Button danger loading={busy === 'rollback'} disabled={current.versions.filter((v) => v.published_at).length < 2}
              onClick={() => modal.confirm({
                title: t('rules.rollbackConfirm'), okText: t('rules.rollback'), cancelText: t('action.cancel'), okButtonProps: { danger: true },
                onOk: () => act('rollback', () => api(`/rules/${current.name}/rollback`, { body: { note: note || null, author: me?.username } }), t('rules.rolledBack')),
              })}>
              {t('rules.rollback')}
            </Button>
          )}
          {dirty && <Button onClick={() => reload(version.data?.content)}>{t('rules.revert')}</Button>}
        </Space>
        <div style={{ height: 520, border: '1px solid #f0f0f0', borderRadius: 6 }} data-testid="jdm-editor"
          onPointerDownCapture={() => { touched.current = true; }} onKeyDownCapture={() => { touched.current = true; }}>
          {content ? (
            <JdmConfigProvider>
              <DecisionGraph key={`${editorKey}-${lang}`} value={content} disabled={!can('rules:write')}
                onChange={onEdit} />
            </JdmConfigProvider>
          ) : version.error ? <ErrorState error={version.error} /> : <Empty />}
        </div>
      </Card>
      <Card size="small">
        <Tabs items={[
          { key: 'dry', label: t('rules.dryRun'), children: can('rules:write') ? <DryRunPanel name={current.name} content={content} /> : <NoPermission /> },
          { key: 'bt', label: t('rules.backtest'), children: can('rules:write') ? <BacktestPanel name={current.name} content={content} /> : <NoPermission /> },
          { key: 'diff', label: t('rules.diffTab'), children: <DiffPanel key={current.name + current.versions.length} name={current.name} set={current} /> },
          { key: 'switch', label: t('rules.switches'), children: (
            <Table size="small" pagination={false} rowKey="id" dataSource={rules} columns={[
              { title: t('rules.ruleId'), dataIndex: 'id' },
              { title: t('rules.description'), dataIndex: 'description' },
              { title: t('rules.enabled'), key: 'on', render: (_, r: any) => (
                <Switch checked={!current.disabled.includes(r.id)} disabled={!can('rules:publish')}
                  onChange={(on) => act('switch', () => api(`/rules/${current.name}/switches/${encodeURIComponent(r.id)}`, { method: 'PUT', body: { enabled: on, author: me?.username } }), on ? t('rules.switchedOn') : t('rules.switchedOff'))} />
              ) },
            ]} />
          ) },
          { key: 'source', label: t('rules.source'), children: (
            <div data-testid="rules-source">
              <Typography.Paragraph type="secondary">{t('rules.sourceHint')}</Typography.Paragraph>
              <Editor height={420} language="json" value={JSON.stringify(content ?? {}, null, 2)}
                options={{ readOnly: true, minimap: { enabled: false }, scrollBeyondLastLine: false, fontSize: 12 }} />
            </div>
          ) },
          { key: 'versions', label: t('rules.versions'), children: (
            <Table size="small" pagination={false} rowKey="version" dataSource={[...current.versions].sort((x, y) => y.version - x.version)} columns={[
              { title: t('rules.version'), dataIndex: 'version', render: (v) => `v${v}` },
              { title: t('field.status'), dataIndex: 'state', render: (v) => <Tag color={v === 'published' ? 'green' : v === 'draft' ? 'gold' : 'default'}>{label('ruleState', v)}</Tag> },
              { title: t('field.actor'), dataIndex: 'author' },
              { title: t('rules.note'), dataIndex: 'note' },
              { title: t('field.createdAt'), dataIndex: 'created_at', render: (v) => time(v) },
              { title: t('rules.publishedAt'), dataIndex: 'published_at', render: (v) => time(v) },
            ]} />
          ) },
        ]} />
      </Card>
    </Space>
  );
}
