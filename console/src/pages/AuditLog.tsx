// 审计日志: every change to an order, rule or setting — who, when, before, after.
import { useState } from 'react';
import { Card, Form, Input, Space, Table, Tag, Typography } from 'antd';
import { api } from '../api';
import { useApi, useCursor } from '../hooks';
import { useI18n } from '../i18n';
import { time } from '../format';
import { EmptyState, ErrorState } from '../components/ErrorState';
import { Pager } from '../components/Pager';

export default function AuditLog() {
  const { t, label } = useI18n();
  const [filters, setFilters] = useState<Record<string, string>>({});
  const cursor = useCursor();
  const { data, error, loading, reload } = useApi((signal) => api<{ items: any[]; next_cursor: string | null }>('/audit-log', {
    query: { ...filters, limit: 50, cursor: cursor.cursor }, signal,
  }), [filters, cursor.cursor]);
  return (
    <Space direction="vertical" size="middle" style={{ width: '100%' }}>
      <Typography.Title level={4} style={{ margin: 0 }}>{t('nav.auditLog')}</Typography.Title>
      <Card size="small">
        <Form layout="inline" onFinish={(v) => { cursor.reset(); setFilters(Object.fromEntries(Object.entries(v).filter(([, x]) => x).map(([k, x]) => [k, String(x).trim()]))); }}>
          <Form.Item name="entity"><Input allowClear placeholder={t('audit.entity')} /></Form.Item>
          <Form.Item name="entity_id"><Input allowClear placeholder={t('audit.entityId')} /></Form.Item>
          <Form.Item name="actor"><Input allowClear placeholder={t('field.actor')} /></Form.Item>
          <Form.Item name="action"><Input allowClear placeholder={t('audit.actionHint')} /></Form.Item>
          <button type="submit" style={{ display: 'none' }} />
          <Typography.Text type="secondary">{t('audit.enterHint')}</Typography.Text>
        </Form>
      </Card>
      {error ? <ErrorState error={error} onRetry={reload} /> : (
        <Card size="small">
          <Table size="small" rowKey="id" loading={loading} dataSource={data?.items ?? []} pagination={false}
            locale={{ emptyText: <EmptyState /> }} data-testid="audit-log-table"
            expandable={{ expandedRowRender: (r: any) => (
              <div style={{ display: 'flex', gap: 16 }}>
                <pre style={{ flex: 1, background: '#fff5f5', padding: 8, margin: 0, whiteSpace: 'pre-wrap' }}>{JSON.stringify(r.before, null, 2) ?? '—'}</pre>
                <pre style={{ flex: 1, background: '#f6ffed', padding: 8, margin: 0, whiteSpace: 'pre-wrap' }}>{JSON.stringify(r.after, null, 2) ?? '—'}</pre>
              </div>
            ) }}
            columns={[
              { title: t('field.time'), dataIndex: 'at', render: (v) => time(v) },
              { title: t('field.actor'), dataIndex: 'actor', render: (v, r: any) => <>{v} <Tag>{label('actorKind', r.actor_kind)}</Tag></> },
              { title: t('audit.action'), dataIndex: 'action' },
              { title: t('audit.entity'), dataIndex: 'entity' },
              { title: t('audit.entityId'), dataIndex: 'entity_id' },
            ]} />
          <Pager page={cursor.page} hasNext={!!data?.next_cursor} onPrev={cursor.prev} onNext={() => cursor.next(data?.next_cursor)} />
        </Card>
      )}
    </Space>
  );
}
